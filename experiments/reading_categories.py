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

import torch

from bagofdims.catalog import Catalog
from bagofdims.features.discovery import (DiscoveryConfig, dim_auc, discover_rows,
                                          discover_unsupervised, positive_rates)
from bagofdims.errors import NothingFound
from bagofdims.features.evaluation import evaluate_prototypes, random_anchor_null
from bagofdims.signs import bits
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
        null = random_anchor_null(packed, d, n_null, len(anchors[0]), n_held, cfg)
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
            "null_held_out_auc": summary(null.tolist()),
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
