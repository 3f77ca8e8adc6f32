"""Reproduce the paper's reading experiments (E1, E2, E3, E8, E9) on one model, per layer.

    python scripts/reproduce_reading.py --model smollm2       # ~10 min on a 2-core CPU
    python scripts/reproduce_reading.py --model gemma3-270m

Writes reports/<model>/reading.md, reading.json and PNG plots. The sign cache is built once under
runs/<model>/cache (resumable) and reused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import bagofdims as bd
from experiments import reading_eval as ev
from experiments import reading_report as rr
from bagofdims.text import english_documents


def get_cache(model, tok, path: Path):
    if (path / "meta.json").exists():
        return bd.SignCache.load(path, model=model, tokenizer=tok)
    cache = bd.SignCache.build(model, tok, sites=["resid.*", "final"],
                               checkpoint=path.with_name(path.name + ".partial"))
    cache.save(path)
    return bd.SignCache.load(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--positions", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=1500, help="unsupervised seeds (E8)")
    p.add_argument("--categories", default="default")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports")
    args = p.parse_args()
    t0 = time.time()
    model, tok = bd.load_model(args.model, device="cpu")
    cache = get_cache(model, tok, Path(args.runs) / args.model / "cache")
    sites = cache.sites
    out_dir = Path(args.out) / args.model
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"model": args.model, "sites": sites, "vocab": len(cache),
                 "width": cache.width(sites[0]),
                 "cache_input": {k: cache.meta.get(k) for k in ("bos", "bos_token", "bos_rule")}}

    print("E3: catalog over every site ...")
    cat = bd.Catalog.build(cache, categories=args.categories, sites=sites, tokenizer=tok)
    cat.save(Path(args.runs) / args.model / "catalog", overwrite=True)
    res["categories"] = {"used": len(cat.names), "skipped": len(cat.meta["skipped"]),
                         "names": cat.names, "config": cat.meta["config"]}
    res["e3"] = rr.e3_by_site(cat, cache)
    res["e3_catalog_pick"] = rr.catalog_pick(cat)
    res["e3_embedding"] = rr.embedding_baseline(model, cache, cat)

    print("E1/E2/E9: states on packaged English text ...")
    texts = english_documents("wiki", n=400)
    col = ev.collect_states(model, tok, texts, sites=sites, n_positions=args.positions)
    res["n_positions"] = int(col["n_positions"])
    res["e1"] = ev.e1_by_site(model, col["states"], col["own_pred"], col["true_next"])
    res["e1_final_fracs"] = ev.e1_sign_lm_head(model, col["states"]["final"], col["own_pred"],
                                               col["true_next"])
    res["e2"] = ev.e2_hamming(col["states"], cache, model, col["own_pred"], col["true_next"],
                              current=col.get("current"))
    res["e9"] = ev.e9_by_site(col["states"])

    print("E8: unsupervised discovery ...")
    e8_sites = [sites[0], sites[len(sites) // 2], sites[-1]]
    res["e8"] = rr.e8_unsupervised(cache, e8_sites, n_seeds=args.seeds, tokenizer=tok)
    res["seconds"] = round(time.time() - t0, 1)
    (out_dir / "reading.json").write_text(json.dumps(res, indent=1))
    from experiments.reading_plots import write_markdown, write_plots

    write_plots(res, out_dir)
    write_markdown(res, out_dir)
    print(f"wrote {out_dir}/reading.md in {res['seconds']} s")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
