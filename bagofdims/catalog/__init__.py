"""Catalog: named sign-pattern features with their evaluation, persisted and queryable.

On disk a catalog is a directory (written atomically): ``catalog.json`` (model, cache
fingerprint, discovery settings, and per feature: name, site, source, threshold, anchors,
held-out members, metrics) and ``features.safetensors`` (``dims`` int64, ``signs`` int8 and
``dim_auc`` float32, all features concatenated, with ``offsets`` int64 [n + 1]).

Stable ids are ``model/site/index``. ``cat[name]`` is the category's feature at its best site,
chosen by the mean per-dim AUC on the anchors (never by held-out numbers).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bagofdims.signs import bits
from bagofdims.features.evidence import EvidenceConfig, evaluate_site
from bagofdims.features.feature import Feature
from bagofdims.features.discovery import DiscoveryConfig
from bagofdims.categories import load_categories, map_categories
from bagofdims.signs.cache import SignCache
from bagofdims.signs.subset import token_population
from bagofdims.models import tokenizer_fingerprint, weight_fingerprint
from bagofdims.catalog import examples as catalog_examples
from bagofdims.catalog import format as catalog_format
from bagofdims.catalog import reading
from bagofdims.catalog.format import CatalogMeta
from bagofdims.errors import CatalogError, InvalidArgument, NotFound

log = logging.getLogger(__name__)



class Catalog:
    """Features (one per category and site) plus the query API."""

    def __init__(self, features: list[Feature], meta: CatalogMeta, cache=None, tokenizer=None,
                 path=None):
        self.features = features
        self.meta = meta
        self.path = Path(path) if path is not None else None
        self._cache = cache
        self._tokenizer = None
        self._lock = threading.Lock()  # the lazily loaded cache is shared by every thread
        if tokenizer is not None:
            self.tokenizer = tokenizer
        for i, f in enumerate(features):
            f.index = i
            f.model = meta.model

    # -- build ------------------------------------------------------------------------------
    @classmethod
    def build(cls, cache, categories="default", sites=("resid.*",), tokenizer=None,
              config: DiscoveryConfig | None = None, n_anchors: int | float | None = None,
              n_min_held_out: int = 10,
              seed: int = 0, progress: bool = True, forms: str = "initial",
              evidence: EvidenceConfig | None = EvidenceConfig()) -> Catalog:
        """Discover one feature per usable category at every matching site of ``cache``.

        ``categories``: a shipped set name, a JSON path, or a dict ``name -> words``. Members are
        mapped to single tokens of the model's tokenizer (``forms``: ``"initial"`` = the token
        after a space, ``"both"`` = with or without it, ``"bare"``; see
        :func:`bagofdims.categories.single_token_forms`); categories with too few are reported
        in ``meta.skipped`` (and logged), never dropped silently. ``evidence``: each feature's
        metrics also get a bootstrap interval of its held-out AUC, the random-token and
        random-listed-word null references and p-values against them
        (:mod:`bagofdims.features.evidence`); ``None`` skips them. ``tokenizer``: the model's
        tokenizer (``bagofdims.models.load_tokenizer(cache.model_name)``); the catalog never loads
        one itself. ``n_anchors``: anchor tokens per category (default 50).

        A subset cache (:mod:`bagofdims.signs.subset`: category members + a random background)
        is accepted: its random-token null draws from the background sample only, and its
        record lands in ``meta.subset``; AUCs against "the vocabulary" are then against the
        cached rows. Categories with members the cache lacks are skipped and listed.

        An example cache (``SignCache.build_inputs``) takes ``categories="labels"`` (the default
        there), a list of labels or a dict ``name -> example indices``, no tokenizer, and
        ``n_anchors`` as a count or fraction (default 0.5) of each category's groups, or of its
        examples when the cache has no groups (:mod:`bagofdims.catalog.examples`).
        """
        config = config or DiscoveryConfig()
        if cache.is_examples:
            n_anchors = catalog_examples.DEFAULT_FRACTION if n_anchors is None else n_anchors
            mapped, skipped, given = catalog_examples.split(cache, categories, n_anchors,
                                                            n_min_held_out, seed)
            return cls._discover(cache, mapped, skipped, given, sites, config, n_anchors,
                                 "examples", evidence, progress, None)
        n_anchors = 50 if n_anchors is None else n_anchors
        if tokenizer is None:
            raise InvalidArgument(
                "Catalog.build needs the model's tokenizer to map category words to tokens: pass "
                f"tokenizer=bagofdims.models.load_tokenizer({cache.model_name!r}).")
        cache.check(tokenizer=tokenizer)
        mapped, skipped = map_categories(load_categories(categories), tokenizer,
                                         n_anchors=n_anchors, n_min_held_out=n_min_held_out,
                                         seed=seed, forms=forms)
        in_cache = set(cache.token_ids.tolist())
        uncovered = [m for m in mapped if not (set(m.anchors) | set(m.held_out)) <= in_cache]
        built_for = (f"; it is a subset built for the categories "
                     f"{cache.meta.subset['categories']!r}" if cache.meta.subset else "")
        for m in uncovered:
            skipped[m.name] = (f"{len(set(m.anchors) | set(m.held_out) - in_cache)} member tokens "
                               f"are not in the cache (it covers {len(cache)} of "
                               f"{cache.meta.vocab_size} ids{built_for})")
        mapped = [m for m in mapped if m not in uncovered]
        if not mapped and uncovered:
            raise CatalogError(
                f"No category can be evaluated: the cache covers only {len(cache)} of the "
                f"{cache.meta.vocab_size} vocabulary ids{built_for} and {len(uncovered)} "
                "categories have members outside it. Build the cache over the full vocabulary "
                "(no tokens=/--tokens) or over a subset for these categories "
                "(bagofdims.signs.subset.build_subset; CLI: capture --subset categories:SET).")
        if not mapped:
            raise CatalogError(
                f"No category has enough single-token members for this tokenizer: each needs "
                f"{n_anchors} anchors + {n_min_held_out} held-out tokens ({len(skipped)} skipped). "
                "Lower n_anchors / n_min_held_out (CLI: --n-anchors / --n-min-held-out), use "
                "forms='both', or give larger categories.")
        if skipped:
            log.info("catalog: %d categories skipped (too few single tokens), %d used; see "
                     "catalog.meta.skipped.", len(skipped), len(mapped))
        given = categories if isinstance(categories, str) else "custom"
        return cls._discover(cache, mapped, skipped, given, sites, config, n_anchors, forms,
                             evidence, progress, tokenizer)

    @classmethod
    def _discover(cls, cache, mapped, skipped, given, sites, config, n_anchors, forms, evidence,
                  progress, tokenizer) -> Catalog:
        """One feature per mapped category at every matching site, with its evaluation."""
        site_list = _match_sites(cache, sites)
        anchor_rows = [cache.rows(m.anchors) for m in mapped]
        held_rows = [cache.rows(m.held_out) for m in mapped]
        # a subset cache's random-token null draws from its background sample only
        token_rows, population = (None, "") if cache.is_examples else token_population(cache)
        features: list[Feature] = []
        for site in tqdm(site_list, desc="catalog", unit="site", disable=not progress):
            d = cache.width(site)
            for m, (found, metrics, threshold) in zip(mapped, evaluate_site(
                    cache.packed(site), d, anchor_rows, held_rows, config, evidence, token_rows)):
                dims, signs, auc, params = found
                features.append(Feature(
                    name=m.name, site=site, dims=dims, signs=signs, dim_auc=auc,
                    anchors=m.anchors, anchor_words=m.anchor_words, held_out=m.held_out,
                    held_out_words=m.held_out_words, method=config.method, params=params,
                    threshold=threshold, metrics=metrics, width=d))
        meta = CatalogMeta(
            model=cache.model_name, weights=cache.meta.weights, tokenizer=cache.meta.tokenizer,
            sites=site_list, config=asdict(config),
            categories=given, n_anchors=n_anchors, forms=forms, skipped=dict(skipped),
            bos_id=cache.meta.bos_id, evidence=evidence.to_dict() if evidence is not None else {},
            cache=str(cache.path.resolve()) if cache.path else None,
            examples=catalog_examples.settings(cache) if cache.is_examples else {},
            subset=_subset_record(cache, population))
        return cls(features, meta, cache=cache, tokenizer=tokenizer)

    # -- access -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.features))

    @property
    def sites(self) -> list[str]:
        return list(self.meta.sites)

    @property
    def model_name(self) -> str:
        return self.meta.model

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self):
        return iter(self.features)

    def __repr__(self) -> str:
        return (f"Catalog(model={self.model_name!r}, {len(self.names)} names, "
                f"{len(self.features)} features, sites={len(self.sites)})")

    def get(self, name: str, site: str | None = None) -> Feature:
        """The feature ``name`` at ``site`` (default: its best site by anchor AUC)."""
        cands = [f for f in self.features if f.name == name]
        if not cands:
            close = self.search(name)[:5]
            hint = f" Did you mean {[f.name for f in close]}?" if close else ""
            raise NotFound(f"No feature named '{name}' in this catalog.{hint}")
        if site is None:
            return max(cands, key=lambda f: f.metrics.get("mean_dim_auc", 0.0))
        for f in cands:
            if f.site == site:
                return f
        raise NotFound(f"'{name}' has no feature at {site}; sites: {[f.site for f in cands]}.")

    def __getitem__(self, key) -> Feature:
        if isinstance(key, int):
            return self.features[key]
        if isinstance(key, tuple):
            return self.get(*key)
        if key.count("/") == 2:  # stable id model/site/index
            return self.features[int(key.rsplit("/", 1)[1])]
        return self.get(key)

    def at(self, site: str) -> list[Feature]:
        """All features at one site."""
        return [f for f in self.features if f.site == site]

    def search(self, text: str) -> list[Feature]:
        """Best-site features whose name or member words contain ``text`` (case-insensitive)."""
        q = text.lower().strip()
        hits = []
        for name in self.names:
            f = self.get(name)
            words = [w.strip().lower() for w in f.anchor_words + f.held_out_words]
            if q in name.lower() or any(q == w or q in w for w in words):
                hits.append(f)
        return sorted(hits, key=lambda f: (q not in f.name.lower(), f.name))

    # -- cache-backed queries ---------------------------------------------------------------
    @property
    def cache(self):
        """The sign cache the catalog was built from (loaded on first use, checked)."""
        with self._lock:
            if self._cache is None:
                self._cache = self._find_cache()
            return self._cache

    def _find_cache(self):
        candidates = []
        if self.path is not None and self.meta.cache_relative:
            candidates.append((self.path / self.meta.cache_relative).resolve())
        if self.meta.cache:
            candidates.append(Path(self.meta.cache))
        for where in candidates:
            if (where / "meta.json").exists():
                cache = SignCache.load(where)
                self._check_cache(cache)
                return cache
        raise CatalogError(
            f"The sign cache of this catalog is not where it was built ({self.meta.cache}) nor at "
            "the same place relative to the catalog; pass cache=SignCache.load(DIR) to "
            "Catalog.load.")

    @property
    def tokenizer(self):
        """The model's tokenizer, as given to build/load (the catalog never loads one)."""
        if self._tokenizer is None:
            raise CatalogError(
                "This catalog has no tokenizer to turn token ids into text: pass tokenizer= to "
                f"Catalog.load (bagofdims.models.load_tokenizer({self.model_name!r})).")
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        if tokenizer_fingerprint(tok) != self.meta.tokenizer:
            raise CatalogError(f"The tokenizer given is not the one of model '{self.model_name}' "
                               "this catalog was built with; load that model's tokenizer.")
        self._tokenizer = tok

    def _text(self, ids) -> list[str]:
        if self.meta.examples:  # rows are examples: index, label and group
            return catalog_examples.describe(self.cache, ids)
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def scores(self, site: str, features: list[Feature] | None = None) -> torch.Tensor:
        """``[n_tokens, k]`` prototype scores of every cached token for features at ``site``."""
        feats = features if features is not None else self.at(site)
        w = bits.feature_matrix([(f.dims, f.signs) for f in feats], self.cache.width(site))
        return bits.feature_scores(self.cache.packed(site), w)

    def top_tokens(self, name: str, k: int = 20, site: str | None = None) -> list[tuple[str, float]]:
        """Vocabulary tokens with the highest agreement with a feature."""
        f = self.get(name, site)
        s = self.scores(f.site, [f])[:, 0]
        top = s.topk(min(k, len(s)))
        return list(zip(self._text(self.cache.token_ids[top.indices]), top.values.tolist()))

    def top_examples(self, name: str, k: int = 20, site: str | None = None) -> list[dict]:
        """Cached examples agreeing most with a feature: index, label, group, score."""
        return catalog_examples.top_examples(self, name, k, site)

    def read_inputs(self, inputs, model, processor, site: str | None = None, top: int = 3,
                    **kwargs) -> list[dict]:
        """Features firing on new examples' pooled states (:mod:`bagofdims.catalog.examples`)."""
        return catalog_examples.read_inputs(self, inputs, model, processor, site, top, **kwargs)

    def features_of_dim(self, site: str, dim: int) -> list[tuple[Feature, int]]:
        """Features at ``site`` that use ``dim``, with the sign each wants there."""
        out = []
        for f in self.at(site):
            hit = (f.dims == dim).nonzero()
            if len(hit):
                out.append((f, int(f.signs[hit[0, 0]])))
        return out

    def explain_dim(self, site: str, dim: int, k: int = 10) -> dict:
        """Tokens most positive and most negative on a dim, and the features it belongs to
        (ranked by value with magnitudes, else by typicality: :func:`reading.explain_dim`)."""
        return reading.explain_dim(self, site, dim, k)

    def read(self, text: str, model, tokenizer=None, site: str | None = None,
             top: int = 3) -> list[dict]:
        """Per token of ``text``, the features that fire at ``site`` (:func:`reading.read_text`)."""
        return reading.read_text(self, text, model, tokenizer, site, top)

    # -- checks -----------------------------------------------------------------------------
    def _check_cache(self, cache) -> None:
        if cache.meta.weights != self.meta.weights or cache.meta.tokenizer != self.meta.tokenizer:
            raise CatalogError(
                f"This catalog belongs to model '{self.model_name}' (weights {self.meta.weights}); "
                f"the cache given is of '{cache.model_name}' (weights {cache.meta.weights}). "
                "Use the cache the catalog was built from, or rebuild the catalog.")

    def check_model(self, model) -> None:
        """Raise unless ``model`` is the one this catalog was built for."""
        if weight_fingerprint(model) != self.meta.weights:
            raise CatalogError(
                f"This catalog belongs to model '{self.model_name}' (weights "
                f"{self.meta.weights}), not to the model given. Load '{self.model_name}' or "
                "rebuild the catalog from a cache of this model.")

    # -- save / load ------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> Path:
        """Write ``catalog.json`` + ``features.safetensors`` atomically, with checksums."""
        out = catalog_format.write(path, self.meta, self.features, overwrite)
        self.path = out
        return out

    @classmethod
    def load(cls, path, cache=None, model=None, tokenizer=None) -> "Catalog":
        """Load and validate a catalog; refuses a ``cache``, ``model`` or ``tokenizer`` that is not
        the one it was built for. Without ``cache`` the built-from cache is found on first use."""
        meta, feats = catalog_format.read(path)
        cat = cls(feats, meta, cache=None, tokenizer=tokenizer, path=path)
        if cache is not None:
            cat._check_cache(cache)
            cat._cache = cache
        if model is not None:
            cat.check_model(model)
        return cat


def _subset_record(cache, population: str) -> dict:
    """A subset cache's record for the catalog meta: without the ids, with the vocabulary size
    and the population its random-token null drew from ({} for other caches)."""
    sub = cache.meta.subset
    if not sub:
        return {}
    return {**{k: v for k, v in sub.items() if k != "background_ids"},
            "vocab_size": cache.meta.vocab_size, "token_null": population}


def _match_sites(cache, patterns) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    out = [s for s in cache.sites if any(fnmatch.fnmatchcase(s, p) for p in patterns)]
    if not out:
        raise NotFound(f"No cached site matches {list(patterns)}; the cache has {cache.sites}.")
    return out
