"""Catalogs over example caches: labelled examples play the anchors' role.

For a cache built by :meth:`SignCache.build_inputs` a category is a label value (or a custom set
of example indices). Its examples are split, seeded and per category, into anchors and held-out
members **by group** when the cache has groups (every example of a group, e.g. every voice of a
spoken word, lands on one side) and by example otherwise. ``n_anchors`` counts those units:
an int is a number of groups (or examples), a float in (0, 1) a fraction of them. Discovery and
evidence then run unchanged (:mod:`bagofdims.features.evidence`); the listed-word null draws from
the examples of every category evaluated, i.e. a random-labelled-examples null.

Queries name examples by their row index, label and group instead of token text.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import numpy as np
import torch

from bagofdims.capture import Capture
from bagofdims.categories import CategoryTokens
from bagofdims.errors import CatalogError, InvalidArgument, InvalidType, NotFound, OutOfRange
from bagofdims.signs import bits
from bagofdims.signs.examples import ExampleSet, pooled_batch, processor_fingerprint, reader_of
from bagofdims.signs.pooling import parse_pool

DEFAULT_FRACTION = 0.5  # of a category's groups (or examples) taken as anchors


def members(cache, categories) -> tuple[dict[str, list[int]], str]:
    """``(name -> example rows, how the categories were given)`` for an example cache."""
    labels = cache.meta.labels
    if isinstance(categories, dict):
        n = len(cache)
        out = {}
        for name, rows in categories.items():
            rows = [int(r) for r in rows]
            if any(not 0 <= r < n for r in rows):
                raise OutOfRange(f"Category '{name}' lists example indices outside 0..{n - 1}; give "
                                 "row indices of the cache's examples.")
            out[str(name)] = sorted(set(rows))
        return out, "custom"
    if labels is None:
        raise CatalogError("This example cache has no labels: rebuild it with labels=..., or pass "
                           "categories={name: [example indices]}.")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab is not None:
            by_label[lab].append(i)
    if categories in ("labels", "default"):
        return dict(sorted(by_label.items())), "labels"
    if isinstance(categories, (list, tuple)) and all(isinstance(c, str) for c in categories):
        missing = [c for c in categories if c not in by_label]
        if missing:
            raise NotFound(f"Labels {missing[:5]} are not in this cache; it has "
                           f"{sorted(by_label)[:20]}.")
        return {c: by_label[c] for c in categories}, "custom"
    raise InvalidArgument(f"categories={categories!r}: for an example cache pass 'labels', a list "
                          "of label values or a dict name -> example indices (word lists and "
                          "shipped sets apply to token caches).")


def anchor_count(n_anchors, n_units: int) -> int:
    """Anchors among ``n_units`` groups (or examples): an int count or a fraction in (0, 1)."""
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, (int, float)):
        raise InvalidType(f"n_anchors={n_anchors!r}: pass a count (int) or a fraction in (0, 1).")
    if isinstance(n_anchors, float):
        if not 0 < n_anchors < 1:
            raise InvalidArgument(f"n_anchors={n_anchors}: a fraction must be in (0, 1); pass an "
                                  "int for a count.")
        return max(1, int(math.floor(n_anchors * n_units + 0.5)))
    if n_anchors < 1:
        raise InvalidArgument(f"n_anchors={n_anchors}: take at least one anchor.")
    return n_anchors


def split(cache, categories, n_anchors, n_min_held_out: int, seed: int
          ) -> tuple[list[CategoryTokens], dict[str, str], str]:
    """Anchors and held-out rows per category (see the module docstring), the skipped ones with
    the reason, and how the categories were given."""
    if n_min_held_out < 1:
        raise InvalidArgument("n_min_held_out must be >= 1: a feature needs held-out examples.")
    groups = cache.meta.groups
    labels = cache.meta.labels
    rows_of, given = members(cache, categories)
    out, skipped = [], {}
    for name, rows in rows_of.items():
        units: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            units[groups[r] if groups is not None else str(r)].append(r)
        keys = sorted(units)
        k = anchor_count(n_anchors, len(keys))
        if len(keys) - k < n_min_held_out:
            unit = "groups" if groups is not None else "examples"
            skipped[name] = (f"{len(keys)} {unit}; need {k} anchors + {n_min_held_out} held out")
            continue
        # per-category seed: adding or removing a category leaves the others' splits alone
        digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        order = [keys[i] for i in torch.randperm(len(keys), generator=g).tolist()]
        anchors = sorted(r for key in order[:k] for r in units[key])
        held = sorted(r for key in order[k:] for r in units[key])
        word = (lambda r: groups[r]) if groups is not None else \
            (lambda r: labels[r] if labels is not None and labels[r] is not None else f"#{r}")
        out.append(CategoryTokens(name, anchors, held, [word(r) for r in anchors],
                                  [word(r) for r in held]))
    if not out:
        raise CatalogError(f"No category has enough examples: each needs anchors + "
                           f"{n_min_held_out} held-out {'groups' if groups else 'examples'} "
                           f"({len(skipped)} skipped: {dict(list(skipped.items())[:3])}). Lower "
                           "n_anchors / n_min_held_out or give more examples.")
    return out, skipped, given


def settings(cache) -> dict:
    """What reading new examples needs to pool them as the cache did (kept in the catalog)."""
    return {"pool": cache.meta.pool, "processor_kwargs": dict(cache.meta.processor_kwargs),
            "n_examples": len(cache), "split": "group" if cache.meta.groups else "example"}


def describe(cache, rows) -> list[str]:
    """``"#index label"`` (and ``"/group"``) for example rows: the text of an example query."""
    labels, groups = cache.meta.labels, cache.meta.groups
    out = []
    for r in (int(x) for x in rows):
        text = f"#{r}"
        if labels is not None and labels[r] is not None:
            text += f" {labels[r]}"
        if groups is not None:
            text += f"/{groups[r]}"
        out.append(text)
    return out


def top_examples(cat, name: str, k: int = 20, site: str | None = None) -> list[dict]:
    """The cached examples that agree most with a feature: index, label, group and score."""
    f = cat.get(name, site)
    s = cat.scores(f.site, [f])[:, 0]
    top = s.topk(min(int(k), len(s)))
    labels, groups = cat.cache.meta.labels, cat.cache.meta.groups
    return [{"index": int(i), "label": labels[i] if labels is not None else None,
             "group": groups[i] if groups is not None else None, "score": float(v)}
            for i, v in zip(top.indices.tolist(), top.values.tolist())]


def read_inputs(cat, inputs, model, processor, site: str | None = None, top: int = 3,
                column: str | None = None, batch_size: int = 32) -> list[dict]:
    """Pool new examples as the cache did and score the features at ``site`` on them.

    ``inputs``: one example (a string or an array) or a list of them, or a Dataset with
    ``column=``.
    Per example: ``{"index", "features": [(name, score)] that fire (score >= threshold, best
    first, at most top), "scores": {name: score} of every feature at the site}``.
    """
    if not cat.meta.examples:
        raise CatalogError("read_inputs is for catalogs of example caches; use Catalog.read(text, "
                           "...) for a token catalog.")
    if model is None or processor is None:
        raise InvalidArgument("read_inputs needs the model and its processor (the catalog never "
                              "loads them).")
    site = site or cat.sites[len(cat.sites) // 2]
    feats = cat.at(site)
    if not feats:
        raise NotFound(f"No features at {site}; this catalog has sites {cat.sites}.")
    cat.check_model(model)
    if isinstance(inputs, (str, np.ndarray)):
        inputs = [inputs]  # one text, image or clip; several come as a list
    data = ExampleSet(inputs, column)
    reader = reader_of(processor, data.get(0, 1)[0])
    if processor_fingerprint(reader) != cat.meta.tokenizer:
        raise CatalogError(f"The processor given is not the one the catalog's examples of model "
                           f"'{cat.model_name}' were cached with; pass that processor.")
    pool = parse_pool(cat.meta.examples["pool"])
    kwargs = cat.meta.examples.get("processor_kwargs", {})
    pooled = []
    with torch.inference_mode(), Capture(model, [site], stop=True) as cap:
        for b in range(0, len(data), batch_size):
            batch = data.get(b, min(b + batch_size, len(data)))
            pooled.append(pooled_batch(model, reader, batch, kwargs, cap, [site], pool)[site].cpu())
    states = torch.cat(pooled)
    w = bits.feature_matrix([(f.dims, f.signs) for f in feats], states.shape[-1])
    s = bits.feature_scores(states, w)
    thr = torch.tensor([f.threshold if f.threshold is not None else 1.0 for f in feats])
    out = []
    for i in range(len(states)):
        fire = (s[i] >= thr).nonzero()[:, 0].tolist()
        ranked = sorted(((feats[j].name, float(s[i, j])) for j in fire), key=lambda x: -x[1])
        out.append({"index": i, "features": ranked[:top],
                    "scores": {f.name: float(s[i, j]) for j, f in enumerate(feats)}})
    return out
