"""How many shipped categories a model's tokenizer can use, and how well their features read.

    python scripts/category_coverage.py --model gemma3-270m
    python scripts/category_coverage.py --model smollm2 --sites resid.0 resid.9

For every shipped category set x token-form policy (``initial``: the token after a space;
``both``: with or without it): categories usable (50 anchors + 10 held-out single tokens),
and at each site the E3 numbers of a catalog built with the default discovery: median held-out
prototype AUC vs the vocabulary and vs other categories' members, and how many reach 0.9.
Needs runs/<model>/cache (scripts/reproduce_reading.py or `bagofdims capture` builds it).
Sites default to the best E3 site of reports/<model>/reading.json, else resid.0. Writes
reports/<model>/categories.md and categories.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import bagofdims as bd
from bagofdims.categories import available, load_categories, map_categories
from bagofdims.models import load_tokenizer


def default_sites(report: Path) -> list[str]:
    if report.exists():
        e3 = json.loads(report.read_text())["e3"]
        return [max(e3, key=lambda s: e3[s]["held_out_auc"]["median"])]
    return ["resid.0"]


def measure(cache, tok, cats: str, forms: str, sites: list[str]) -> dict:
    members = load_categories(cats)
    mapped, skipped = map_categories(members, tok, forms=forms)
    row = {"set": cats, "forms": forms, "categories": len(members),
           "usable": len(mapped), "skipped": len(skipped), "sites": {}}
    if not mapped:
        return row
    cat = bd.Catalog.build(cache, categories=cats, sites=sites, tokenizer=tok, forms=forms,
                           progress=False)
    for site in sites:
        held = [f.metrics["held_out_auc"] for f in cat if f.site == site]
        hard = [f.metrics["hard_auc"] for f in cat if f.site == site]
        row["sites"][site] = {"held_out_median": statistics.median(held),
                              "hard_median": statistics.median(hard),
                              "discoverable": sum(a >= 0.9 for a in held)}
    return row


def markdown(res: dict) -> str:
    L = [f"# Category coverage on {res['model']}", "",
         f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s). Vocabulary {res['vocab']:,} "
         f"tokens. A category is usable with >= 50 anchor + 10 held-out single-token ids; "
         "discovery is the default (top-32 dims by per-dim AUC). AUCs are on held-out members "
         "only, vs the whole vocabulary (minus anchors) and vs the other categories' members.", "",
         "| set | forms | categories | usable | site | held-out AUC (median) | vs other categories "
         "| discoverable (>= 0.9) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for site, m in (r["sites"] or {"–": None}).items():
            auc = (f"{m['held_out_median']:.3f} | {m['hard_median']:.3f} | "
                   f"{m['discoverable']}/{r['usable']}") if m else "– | – | –"
            L.append(f"| {r['set']} | {r['forms']} | {r['categories']} | {r['usable']} | {site} "
                     f"| {auc} |")
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--sets", nargs="+", default=available())
    p.add_argument("--forms", nargs="+", default=["initial", "both"])
    p.add_argument("--sites", nargs="*")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    out = Path(a.out) / a.model
    sites = a.sites or default_sites(out / "reading.json")
    cache = bd.SignCache.load(Path(a.runs) / a.model / "cache", verify=False)
    tok = load_tokenizer(cache.model_name)
    rows = []
    for cats in a.sets:
        for forms in a.forms:
            rows.append(measure(cache, tok, cats, forms, sites))
            r = rows[-1]
            print(f"{cats}/{forms}: {r['usable']} of {r['categories']} usable; "
                  + "; ".join(f"{s} median {m['held_out_median']:.3f}" for s, m in r["sites"].items()),
                  flush=True)
    res = {"model": a.model, "vocab": len(cache), "rows": rows, "seconds": time.time() - t0,
           "command": "python scripts/category_coverage.py " + " ".join(os.sys.argv[1:])}
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("categories.json", json.dumps(res, indent=1)), ("categories.md", markdown(res))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(f"wrote {out / 'categories.md'} in {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
