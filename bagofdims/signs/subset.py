"""Subset sign caches for large vocabularies: category members + a stated random background.

A full cache runs one forward pass per vocabulary token (262,144 for Gemma 3), out of reach on a
CPU for multi-billion-parameter models. A subset cache holds two kinds of rows:

- **members**: every single-token form of every word of a category set (``forms="both"``: with
  and without a leading space, see :func:`bagofdims.categories.single_token_forms`), so a
  catalog of that set, under any ``forms`` policy, finds all its anchors and held-out members;
- **background**: ``background`` vocabulary ids drawn uniformly without replacement by a seeded
  generator (members may be drawn too). It stands for the vocabulary where one is needed: the
  catalog's random-token reference draws from it alone (:func:`token_population`).

The rule, the category set, the seed, the sizes and the background ids themselves are recorded
in ``CacheMeta.subset`` (checked on load); catalogs copy the record (without the ids) into their
meta, and ``bagofdims info``, ``catalog`` and ``query`` print it. What a subset changes: every
number a catalog computes against "the vocabulary" (held-out AUC, firing thresholds, discovery's
per-dim AUC) is against the cached rows, where listed words are far more common than in the
whole vocabulary (README, "Large vocabularies: subset caches", gives the measured difference on
SmolLM2: ``scripts/compare_subset.py``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

import torch

from bagofdims.categories import load_categories, single_token_forms
from bagofdims.errors import CacheError, InvalidArgument, OutOfRange
from bagofdims.signs.cache import SignCache
from bagofdims.signs.meta import SUBSET_RULE

FORMS = "both"  # member forms cached: a superset of what every catalog `forms` policy maps
# what a subset changes in a catalog's numbers (printed beside them)
SUBSET_NOTE = ("catalog AUCs are against these cached tokens, not the whole vocabulary; the "
               "random-token null draws from the background sample only")


@dataclass(frozen=True)
class SubsetSpec:
    """The tokens of a subset cache and how they were chosen."""

    categories: str  # shipped set name, JSON path, or "custom" (a dict was given)
    n_categories: int
    member_ids: torch.Tensor  # int64, sorted: single-token forms of the listed words
    background_ids: torch.Tensor  # int64, sorted: the seeded uniform sample of the vocabulary
    seed: int
    vocab_size: int

    @property
    def token_ids(self) -> torch.Tensor:
        """Rows of the cache: members and background, sorted and unique."""
        return torch.unique(torch.cat([self.member_ids, self.background_ids]))

    def record(self) -> dict:
        """What ``CacheMeta.subset`` holds (validated by :class:`CacheMeta`)."""
        return {"rule": SUBSET_RULE, "categories": self.categories, "forms": FORMS,
                "n_categories": self.n_categories, "n_members": len(self.member_ids),
                "background": len(self.background_ids), "seed": self.seed,
                "n_tokens": len(self.token_ids), "background_ids": self.background_ids.tolist()}


def subset_tokens(tokenizer, categories: str | os.PathLike | Mapping = "default",
                  background: int = 20_000, seed: int = 0,
                  vocab_size: int | None = None) -> SubsetSpec:
    """The tokens of a subset cache: all members of ``categories`` plus a random background.

    ``categories``: a shipped set name, a JSON path or a dict ``name -> words`` (as
    :meth:`bagofdims.catalog.Catalog.build` takes). ``background``: vocabulary ids drawn
    uniformly without replacement with ``torch.Generator().manual_seed(seed)``. ``vocab_size``:
    the ids a cache can hold (default ``len(tokenizer)``; pass the model's, which
    :func:`build_subset` does, when its embedding has fewer rows).
    """
    if isinstance(background, bool) or not isinstance(background, int) or background < 0:
        raise InvalidArgument(f"background={background!r}: give a whole number of random "
                              "vocabulary tokens >= 0 (e.g. 20000).")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgument(f"seed={seed!r}: give a whole number.")
    n_vocab = len(tokenizer) if vocab_size is None else vocab_size
    if background > n_vocab:
        raise InvalidArgument(f"background={background:,} is more than the {n_vocab:,} tokens of "
                              "the vocabulary; build the full cache instead (no subset).")
    cats = load_categories(categories)
    words = [w for ws in cats.values() for w in ws]
    found = single_token_forms(words, tokenizer, FORMS)
    members = torch.tensor(sorted({i for forms in found.values() for i, _ in forms if i < n_vocab}),
                           dtype=torch.int64)
    if not len(members):
        raise InvalidArgument(f"No word of the categories {_name(categories)!r} is a single token "
                              "of this tokenizer; give other categories or build the full cache.")
    g = torch.Generator().manual_seed(seed)
    drawn = torch.randperm(n_vocab, generator=g)[:background].sort().values
    return SubsetSpec(_name(categories), len(cats), members, drawn, seed, n_vocab)


def _name(categories) -> str:
    return os.fspath(categories) if isinstance(categories, (str, os.PathLike)) else "custom"


def build_subset(model, tokenizer, categories="default", background: int = 20_000,
                 seed: int = 0, **build_kwargs) -> SignCache:
    """:meth:`SignCache.build` over :func:`subset_tokens`, with the subset recorded in its meta.

    ``build_kwargs`` go to :meth:`SignCache.build` (sites, bos, batch_size, checkpoint, ...).
    """
    if "tokens" in build_kwargs:
        raise InvalidArgument("build_subset chooses the tokens itself; drop tokens=.")
    n_vocab = min(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    spec = subset_tokens(tokenizer, categories, background, seed, vocab_size=n_vocab)
    cache = SignCache.build(model, tokenizer, tokens=spec.token_ids, **build_kwargs)
    return attach(cache, spec)


def attach(cache: SignCache, spec: SubsetSpec) -> SignCache:
    """Record ``spec`` in the meta of ``cache`` (built over ``spec.token_ids``); returns it."""
    if cache.meta.vocab_size != spec.vocab_size or not torch.equal(cache.token_ids, spec.token_ids):
        raise InvalidArgument("The cache was not built over this subset's tokens: pass "
                              "tokens=spec.token_ids to SignCache.build (or use build_subset).")
    meta = dataclasses.replace(cache.meta, subset=spec.record())
    meta.validate("the subset cache")
    cache.meta = meta
    return cache


def token_population(cache) -> tuple[torch.Tensor | None, str]:
    """Rows the random-token references draw from, and what they are.

    A subset cache: the rows of its background sample (refused with :class:`CacheError` if the
    cache lacks one of them, so no reference ever draws a token that was not cached). Any other
    cache: ``None`` (every row).
    """
    sub = cache.meta.subset
    if not sub:
        whole = "the whole vocabulary" if cache.meta.full_vocab else \
            f"a {cache.meta.vocab_size:,}-token vocabulary"
        return None, f"all {len(cache):,} cached tokens ({whole})"
    try:
        rows = cache.rows(sub["background_ids"])
    except OutOfRange as err:
        raise CacheError(f"The subset cache lacks tokens of its own background sample ({err}); "
                         "the cache is corrupt, rebuild it.") from None
    return rows, (f"the background sample: {len(rows):,} random vocabulary tokens "
                  f"(seed {sub['seed']})")


def describe(sub: dict, vocab_size: int | None = None) -> str:
    """One line about a subset record (``CacheMeta.subset`` or a catalog's copy)."""
    of = f" of {vocab_size:,}" if vocab_size else ""
    return (f"{sub['n_tokens']:,}{of} tokens = {sub['n_members']:,} single-token members of "
            f"{sub['n_categories']} categories ({sub['categories']!r}, forms {sub['forms']}) + "
            f"{sub['background']:,} random background tokens (seed {sub['seed']})")
