"""A catalog from a subset cache next to the one from the full cache, on the same sites.

    python scripts/compare_subset.py [--cache runs/smollm2/cache] [--background 20000]

The subset's rows are taken from the full cache (a token's signs do not depend on which other
tokens are cached), so the two catalogs differ only by the population: category members + a
random background instead of the whole vocabulary. Prints, per site, the median over categories
of each catalog's held-out AUC, hard AUC, random-token null and the count above both nulls.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np

import bagofdims as bd
from bagofdims.models import load_tokenizer
from bagofdims.signs.cache import TOKEN_IDS
from bagofdims.signs.subset import attach, subset_tokens


def carve(cache, spec):
    """The subset cache of ``spec`` made of ``cache``'s rows (no forward pass)."""
    ids = spec.token_ids.numpy()
    signs = {k: np.asarray(v)[ids] for k, v in cache._signs.items() if k != TOKEN_IDS}
    signs[TOKEN_IDS] = ids.astype(np.int64)
    meta = dataclasses.replace(cache.meta, full_vocab=False, n_tokens=len(ids), magnitudes=False,
                               files={}, tokens_sha256="carved")
    return attach(bd.SignCache(meta, signs), spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default="runs/smollm2/cache")
    p.add_argument("--categories", default="default")
    p.add_argument("--background", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sites", nargs="+", default=["resid.4", "resid.16", "resid.24", "final"])
    a = p.parse_args()
    full = bd.SignCache.load(a.cache)
    tok = load_tokenizer(full.model_name)
    spec = subset_tokens(tok, a.categories, a.background, a.seed, vocab_size=full.meta.vocab_size)
    sub = carve(full, spec)
    print(f"{full.model_name}: full cache {len(full):,} tokens; subset {len(sub):,} = "
          f"{len(spec.member_ids):,} members of '{a.categories}' + {a.background:,} background "
          f"(seed {a.seed})")
    cats = {}
    for name, cache in (("full", full), ("subset", sub)):
        t = time.perf_counter()
        cats[name] = bd.Catalog.build(cache, categories=a.categories, sites=a.sites, tokenizer=tok,
                                      progress=False)
        print(f"  {name} catalog: {len(cats[name].names)} categories, "
              f"{time.perf_counter() - t:.0f} s")
    assert cats["full"].names == cats["subset"].names
    keys = ("held_out_auc", "hard_auc", "null_token_auc", "null_listed_auc")
    print(f"{'site':9s} {'catalog':7s} " + " ".join(f"{k:>16s}" for k in keys) + "  above null")
    for site in a.sites:
        for name, cat in cats.items():
            feats = cat.at(site)
            med = [statistics.median(f.metrics[k] for f in feats) for k in keys]
            above = sum(f.metrics["p_token"] < 0.05 and f.metrics["p_listed"] < 0.05 for f in feats)
            print(f"{site:9s} {name:7s} " + " ".join(f"{m:16.3f}" for m in med) +
                  f"  {above}/{len(feats)}")
        same = [len(set(cats["full"].get(n, site).dims.tolist()) &
                    set(cats["subset"].get(n, site).dims.tolist())) / len(cats["full"].get(n, site))
                for n in cats["full"].names]
        print(f"{site:9s} dims shared by the two catalogs' features: median "
              f"{statistics.median(same):.2f}")


if __name__ == "__main__":
    main()
