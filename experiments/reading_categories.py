"""E3 / E8 of the reading report: category discovery per layer with its baselines, and the
unsupervised features. (E1, E2, E9 live in :mod:`experiments.reading_eval`.)

Per site: the median held-out prototype AUC against the whole vocabulary and against the other
categories' members, the mean per-dim AUC of the kept dims, how many categories are
"discoverable" (held-out AUC >= 0.9, our threshold: the paper does not define it), how many dims
pass the paper's tau = 0.75, a null from random anchor sets, and the same category numbers from
the signs of the embedding matrix (does the cache only re-encode the embeddings?).
"""

from __future__ import annotations

import collections
import statistics
import time

import torch

from bagofdims.catalog import Catalog
from bagofdims.features.discovery import (DiscoveryConfig, dim_auc, discover_rows,
                                          discover_unsupervised, positive_rates)
from bagofdims.errors import NothingFound
from bagofdims.features.evaluation import (evaluate_prototypes, membership, prototype_scores,
                                           random_anchor_null)
from bagofdims.features.evidence import (EvidenceConfig, category_interval, evaluate_site,
                                         member_wins, null_draws, reference_evidence)
from bagofdims.features.selection import SelectionConfig, nested_select
from bagofdims.signs import bits
from bagofdims.signs.subset import token_population
from experiments.report import summary

DISCOVERABLE = 0.9


def e3_by_site(cat: Catalog, cache, n_null: int = 20, tau: float = 0.75) -> dict:
    """Per-site E3 numbers from a built catalog (its features carry the held-out metrics)."""
    out = {}
    feats0 = cat.at(cat.sites[0])
    anchors = [cache.rows(f.anchors) for f in feats0]
    n_held = int(statistics.median(len(f.held_out) for f in feats0))
    cfg = DiscoveryConfig(**cat.meta.config)
    for site in cat.sites:
        fs = cat.at(site)
        packed, d = cache.packed(site), cache.width(site)
        auc, _ = dim_auc(packed, d, anchors, positive_rates(packed, d))
        m0 = fs[0].metrics
        # the catalog's own nulls when it has them (same draws as its p-values), else fresh ones
        null = [m0["null_token_auc"]] if "null_token_auc" in m0 else \
            random_anchor_null(packed, d, n_null, len(anchors[0]), n_held, cfg).tolist()
        held = [f.metrics["held_out_auc"] for f in fs]
        out[site] = {
            "held_out_auc": summary(held),
            "hard_auc": summary(f.metrics["hard_auc"] for f in fs),
            "anchor_auc": summary(f.metrics["anchor_auc"] for f in fs),
            "mean_dim_auc": statistics.fmean(f.metrics["mean_dim_auc"] for f in fs),
            "discoverable": sum(h >= DISCOVERABLE for h in held),
            "n_categories": len(fs),
            "tau_dims_mean": float((auc >= tau).sum(1).double().mean()),
            "tau_nonempty": int(((auc >= tau).sum(1) > 0).sum()),
            "best_dim_auc_median": float(auc.max(1).values.median()),
            "null_held_out_auc": summary(null),
            "null_listed_auc": m0.get("null_listed_auc", float("nan")),
            "above_null": sum(f.metrics.get("above_null", 0.0) for f in fs) if "above_null" in m0
            else None,
            "per_category": {f.name: round(f.metrics["held_out_auc"], 4) for f in fs},
        }
    return out


def catalog_pick(cat: Catalog) -> dict:
    """Held-out numbers of ``cat[name]``: each category at the site the catalog picks from its
    anchors alone (highest mean per-dim anchor AUC), never from held-out members."""
    picked = [cat[name] for name in cat.names]
    return {
        "held_out_auc": summary(f.metrics["held_out_auc"] for f in picked),
        "hard_auc": summary(f.metrics["hard_auc"] for f in picked),
        "sites": dict(collections.Counter(f.site for f in picked).most_common()),
    }


def embedding_baseline(model, cache, cat: Catalog, tau: float = 0.75) -> dict:
    """The E3 numbers on the signs of the input embedding matrix, same categories and rule."""
    emb = model.get_input_embeddings().weight.detach().float().cpu()
    packed = bits.pack_signs(emb[cache.token_ids])
    d = emb.shape[1]
    fs = cat.at(cat.sites[0])
    anchors = [cache.rows(f.anchors) for f in fs]
    held = [cache.rows(f.held_out) for f in fs]
    cfg = DiscoveryConfig(**cat.meta.config)
    found = discover_rows(packed, d, anchors, cfg)
    ev = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchors, held)
    auc, _ = dim_auc(packed, d, anchors)
    return {
        "held_out_auc": summary(ev["held_out_auc"].tolist()),
        "hard_auc": summary(ev["hard_auc"].tolist()),
        "discoverable": int((ev["held_out_auc"] >= DISCOVERABLE).sum()),
        "mean_dim_auc": float(torch.stack([f[2].mean() for f in found]).mean()),
        "tau_dims_mean": float((auc >= tau).sum(1).double().mean()),
        "per_category": {f.name: round(float(a), 4) for f, a in zip(fs, ev["held_out_auc"])},
    }


def e8_unsupervised(cache, sites, n_seeds: int = 1500, tokenizer=None, tau: float = 0.75) -> dict:
    """Unsupervised discovery (seed -> 50 Hamming neighbours -> per-dim AUC >= ``tau``) at a
    few sites. A site where no seed yields a feature is a result (yield 0), not a failure."""
    out = {}
    for site in sites:
        try:
            res = discover_unsupervised(cache, site, n_seeds=n_seeds, method="tau", tau=tau,
                                        tokenizer=tokenizer)
        except NothingFound:
            out[site] = {"n_seeds": n_seeds, "yield": 0.0, "sparsity": 1.0, "dims_mean": 0.0,
                         "dims_median": 0.0, "tau": tau, "n_features": 0, "n_dropped": n_seeds,
                         "examples": []}
            continue
        row = res.summary()
        examples = sorted(res.features, key=lambda f: -float(f.dim_auc.mean()) if len(f) else 0)[:8]
        row["examples"] = [f.name for f in examples]
        out[site] = row
    return out


def _word(form: str) -> str:
    """The word a token form belongs to (" Paris" and "Paris" are one word)."""
    return form.strip().lower()


def embedding_signs(model, cache) -> tuple[torch.Tensor, int]:
    """Packed signs of the cached tokens at the ``embed`` site: the cache's own when it has the
    site, else the rows of the input embedding matrix (the same signs: the embed site of a
    single token is its embedding row, scaled by a positive factor in some models)."""
    if "embed" in cache.sites:
        return cache.packed("embed"), cache.width("embed")
    emb = model.get_input_embeddings().weight.detach().float().cpu()[cache.token_ids]
    return bits.pack_signs(emb), emb.shape[1]


def e3_selection(cat: Catalog, cache, embed: tuple[torch.Tensor, int],
                 ev: EvidenceConfig | None = None, sel: SelectionConfig | None = None) -> dict:
    """E3's headline: site and discovery config chosen by nested CV on the anchors only, then
    the held-out evaluation of that one choice with every reference.

    Returns the choice, its held-out AUC against the vocabulary and against other categories
    (median over categories with a two-level bootstrap interval: categories, then members), the
    random-token and random-listed-word nulls at the same site and config (median, 10th / 90th
    percentile, p-values and above-null counts), the embedding-sign reference (same anchors,
    config and scoring on ``embed``: packed signs of the same rows at the ``embed`` site, from
    :func:`embedding_signs`) with the paired
    gain, each category's own anchors-only choice, and the held-out-chosen upper bound
    (labelled: optimistic by construction).
    """
    ev = ev or EvidenceConfig()
    sel = sel or SelectionConfig()
    feats = cat.at(cat.sites[0])
    anchors = [cache.rows(f.anchors) for f in feats]
    held = [cache.rows(f.held_out) for f in feats]
    groups = [[_word(w) for w in f.anchor_words] if len(f.anchor_words) == len(f.anchors)
              else list(range(len(f.anchors))) for f in feats]
    sources = {s: (cache.packed(s), cache.width(s)) for s in cat.sites}
    base = DiscoveryConfig(**cat.meta.config)
    t0 = time.time()
    choice = nested_select(sources, anchors, held, groups, sel, base)
    t_sel = time.time() - t0
    packed, d = sources[choice.site]
    cfg = choice.config
    n = packed.shape[0]
    vocab_pos = positive_rates(packed, d)
    found = discover_rows(packed, d, anchors, cfg, vocab_pos)
    scores = prototype_scores(packed, d, [(f[0], f[1]) for f in found])
    a_m, h_m = membership(n, anchors), membership(n, held)
    members = a_m | h_m
    u, valid = member_wins(scores, h_m, ~a_m & ~h_m)
    uh, valid_h = member_wins(scores, h_m, members.any(1, keepdim=True) & ~members)
    pool = torch.cat(anchors + held)
    n_a, n_h = int(statistics.median(map(len, anchors))), int(statistics.median(map(len, held)))
    rows, _ = token_population(cache)  # a subset cache's token null draws from its background
    per = evaluate_site(packed, d, anchors, held, cfg, ev, rows)
    metrics = [m for _, m, _ in per]
    listed = null_draws(packed, d, "listed", n_a, n_h, cfg, ev, pool, vocab_pos)
    token = null_draws(packed, d, "token", n_a, n_h, cfg, ev, pool, vocab_pos, rows)
    ref = reference_evidence(embed[0], embed[1], anchors, held, cfg, ev, scores)
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    interval = lambda *a: dict(zip(("median", "lo", "hi"), category_interval(  # noqa: E731
        *a, n_boot=ev.n_boot, level=ev.level, seed=ev.seed)))
    col = lambda key: [m[key] for m in metrics]  # noqa: E731
    return {
        "choice": choice.to_dict(), "seconds_selection": round(t_sel, 1),
        "evidence": ev.to_dict(), "names": [f.name for f in feats],
        "held_out_auc": interval(u, valid), "hard_auc": interval(uh, valid_h),
        "per_category": {f.name: {k: m[k] for k in ("held_out_auc", "held_out_auc_lo",
                                                   "held_out_auc_hi", "hard_auc", "p_token",
                                                   "p_listed", "p_hard", "above_null",
                                                   "mean_dim_auc")}
                         | {"embedding_auc": float(ref["ref_held_out_auc"][c]),
                            "gain": float(ref["ref_gain"][c]),
                            "gain_lo": float(ref["ref_gain_lo"][c]),
                            "gain_hi": float(ref["ref_gain_hi"][c])}
                         for c, (f, m) in enumerate(zip(feats, metrics))},
        "mean_dim_auc": interval(torch.tensor(col("mean_dim_auc"))),
        "n_dims": [len(f[0]) for f in found],
        "discoverable": sum(h >= DISCOVERABLE for h in col("held_out_auc")),
        "n_categories": len(feats),
        "above_null": int(sum(col("above_null"))),
        "above_hard_null": sum(p < ev.alpha for p in col("p_hard")),
        "null_listed": dict(zip(("q10", "median", "q90"), torch.quantile(listed["held_out_auc"], q).tolist())),
        "null_listed_hard": dict(zip(("q10", "median", "q90"), torch.quantile(listed["hard_auc"], q).tolist())),
        "null_token": dict(zip(("q10", "median", "q90"), torch.quantile(token["held_out_auc"], q).tolist())),
        "embedding": interval(ref["ref_held_out_auc"]),
        "embedding_hard": interval(ref["ref_hard_auc"]),
        "gain_over_embedding": interval(ref["u_gain"], ref["valid"]),
        "gain_positive": int(sum(float(lo) > 0 for lo in ref["ref_gain_lo"])),
        "per_category_choice": interval(choice.per_category_held_out_auc),
    }


class _IidSigns:
    """The few cache methods unsupervised discovery reads, over i.i.d. signs with a real site's
    per-dim positive rates (a null with the marginals and none of the structure)."""

    def __init__(self, cache, site: str, seed: int):
        d = cache.width(site)
        rate = (positive_rates(cache.packed(site), d) / len(cache)).float()
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(len(cache), d, generator=g) < rate).float() * 2 - 1
        self._site, self._d, self._packed = site, d, bits.pack_signs(x)
        self.token_ids, self.model_name = cache.token_ids, f"{cache.model_name} (i.i.d. null)"

    def width(self, site: str) -> int:
        return self._d

    def packed(self, site: str, device=None) -> torch.Tensor:
        return self._packed


def e8_iid_null(cache, sites, n_seeds: int = 1500, tau: float = 0.75, seed: int = 0) -> dict:
    """E8 rerun on i.i.d. signs drawn with each site's real per-dim positive rates: the yield a
    vocabulary without any shared structure gives (the E8 rows' null)."""
    out = {}
    for site in sites:
        fake = _IidSigns(cache, site, seed)
        try:
            res = discover_unsupervised(fake, site, n_seeds=n_seeds, method="tau", tau=tau)
            out[site] = res.summary()
        except NothingFound:
            out[site] = {"n_seeds": n_seeds, "yield": 0.0, "n_features": 0}
    return out
