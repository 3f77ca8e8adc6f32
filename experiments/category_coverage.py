"""How many shipped categories a model's tokenizer can use, and how well their features read
(``categories.md``, ``categories.json``).

    python scripts/category_coverage.py --model gemma3-270m
    python scripts/category_coverage.py --model smollm2 --sites resid.0 resid.9

For every shipped category set x token-form policy (``initial``: the token after a space;
``both``: with or without it): categories usable (50 anchors + 10 held-out single tokens),
and at each site the E3 numbers of a catalog built with the default discovery: median held-out
prototype AUC vs the vocabulary and vs other categories' members, and how many reach 0.9.
Needs ``<runs>/<model>/cache`` (the reading report or ``bagofdims capture`` builds it). Sites
default to the site the reading report (in the report folder, else the shipped
``reports/<model>/reading.json``) chose on anchors only, else ``resid.0``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

import bagofdims as bd
from bagofdims.categories import available, load_categories, map_categories
from bagofdims.models import load_tokenizer
from experiments.report import command, write_report
from experiments.runs import REPORTS, RunConfig, entry, model_tag

__all__ = ["CoverageConfig", "default_sites", "main", "markdown", "measure"]

SCRIPT = "scripts/category_coverage.py"


def _shipped_sets() -> tuple[str, ...]:
    return tuple(available())


@dataclass
class CoverageConfig(RunConfig):
    """How many shipped categories a model's tokenizer can use, and how well they read."""

    sets: tuple[str, ...] = field(default_factory=_shipped_sets)
    """category sets (default: every shipped one)"""
    forms: tuple[str, ...] = ("initial", "both")
    """token-form policies"""
    sites: tuple[str, ...] | None = None
    """sites (default: the reading report's best E3 site)"""
    threads: int = 2


def default_sites(*reports: Path) -> tuple[list[str], str]:
    """The site of the first reading report that exists, chosen on anchors only, and how: its
    nested cross-validation choice, else the catalog's rule (highest mean per-dim AUC on the
    anchors); ``["resid.0"]`` without a report. Never the best held-out site."""
    for report in reports:
        if report.exists():
            res = json.loads(report.read_text())
            choice = (res.get("e3_selection") or {}).get("choice")
            if choice:
                return [choice["site"]], (f"{choice['site']}: the site {report} chose by nested "
                                          "cross-validation on the anchors")
            e3 = res["e3"]
            site = max(e3, key=lambda s: e3[s]["mean_dim_auc"])
            return [site], (f"{site}: highest mean per-dim AUC on the anchors in {report} "
                            "(the catalog's rule)")
    return ["resid.0"], "resid.0: no reading report to choose a site from"


def measure(cache, tok, cats: str, forms: str, sites: list[str]) -> dict:
    """Usable categories of set ``cats`` under ``forms``, and their E3 medians per site."""
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
         "only, vs the whole vocabulary (minus anchors) and vs the other categories' members."
         + (f" Site {res['site_rule']}." if res.get("site_rule") else ""), "",
         "| set | forms | categories | usable | site | held-out AUC (median) | vs other categories "
         "| discoverable (>= 0.9) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for site, m in (r["sites"] or {"–": None}).items():
            auc = (f"{m['held_out_median']:.3f} | {m['hard_median']:.3f} | "
                   f"{m['discoverable']}/{r['usable']}") if m else "– | – | –"
            L.append(f"| {r['set']} | {r['forms']} | {r['categories']} | {r['usable']} | {site} "
                     f"| {auc} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> dict:
    """Parse the flags, measure every set x forms, write the report; returns the result."""

    cfg = tyro.cli(CoverageConfig, args=argv)
    out = cfg.out_dir
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    if cfg.sites:
        sites, rule = list(cfg.sites), "given by --sites"
    else:
        sites, rule = default_sites(out / "reading.json",
                                    REPORTS / model_tag(cfg.model) / "reading.json")
    tok = load_tokenizer(cfg.model)
    cache = bd.SignCache.load(cfg.run_dir / "cache", tokenizer=tok, verify=False)
    rows = []
    for cats in cfg.sets:
        for forms in cfg.forms:
            r = measure(cache, tok, cats, forms, sites)
            rows.append(r)
            print(f"{cats}/{forms}: {r['usable']} of {r['categories']} usable; "
                  + "; ".join(f"{s} median {m['held_out_median']:.3f}" for s, m in r["sites"].items()),
                  flush=True)
    res = {"model": cfg.model, "vocab": len(cache), "rows": rows, "seconds": time.time() - t0,
           "command": command(SCRIPT, argv), "site_rule": rule}
    md = write_report(out, "categories", res, markdown(res))
    print(f"wrote {md} (+ categories.json) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
