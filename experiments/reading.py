"""The reading report (E1, E2, E3, E8, E9 per layer) of one model: ``reading.json``, ``reading.md``
and two plots.

    python scripts/reproduce_reading.py --model smollm2                  # -> runs/smollm2/reports
    python scripts/reproduce_reading.py --model smollm2 --write-reports  # -> reports/smollm2

The shipped SmolLM2 page took 57 minutes on a 2-core CPU shared with other jobs; the catalog's
nulls at every site and E3's nested cross-validation over every site are the largest parts. The sign cache (sites ``resid.*`` and ``final``) is
built once under ``<runs>/<model>/cache`` (resumable) and reused; the catalog of every site is
saved to ``<runs>/<model>/catalog`` for the probe and coverage reports.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
import tyro

import bagofdims as bd
from bagofdims.features.selection import SelectionConfig
from bagofdims.text import english_documents
from experiments import reading_categories as rc
from experiments import reading_eval as ev
from experiments.reading_report import markdown, write_plots
from experiments.report import command, write_json, write_report
from experiments.runs import RunConfig, entry, load_or_build_cache

__all__ = ["ReadingConfig", "main", "run"]

SCRIPT = "scripts/reproduce_reading.py"
# E3's candidates: every site of the cache x these rules, chosen on the anchors only
E3_SELECTION = SelectionConfig(ks=(8, 16, 32, 64, 128, 256), taus=(0.65, 0.7, 0.75), folds=5)


@dataclass
class ReadingConfig(RunConfig):
    """Reproduce the paper's reading experiments (E1, E2, E3, E8, E9) on one model, per layer."""

    positions: int = 1000
    """text positions of packaged Wikipedia leads read for E1, E2, E9"""
    seeds: int = 1500
    """unsupervised seeds per site (E8)"""
    categories: str = "default"
    """category set: a shipped name or a JSON path"""
    texts: int = 400
    """packaged documents to draw the positions from"""
    seed: int = 0
    """torch seed set before the run"""


def run(cfg: ReadingConfig, argv=None) -> dict:
    """Compute the report's numbers (the content of ``reading.json``)."""
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    model, tok = bd.load_model(cfg.model, device="cpu")
    cache = load_or_build_cache(model, tok, cfg.run_dir / "cache", sites=["resid.*", "final"])
    sites = cache.sites
    meta = cache.meta
    res: dict = {"model": cfg.model, "command": command(SCRIPT, argv), "sites": sites,
                 "vocab": len(cache), "width": cache.width(sites[0]),
                 "cache_input": {"bos": meta.bos, "bos_token": meta.bos_token,
                                 "bos_rule": meta.bos_rule}}

    print("E3: catalog over every site ...", flush=True)
    cat = bd.Catalog.build(cache, categories=cfg.categories, sites=sites, tokenizer=tok)
    cat.save(cfg.run_dir / "catalog", overwrite=True)
    res["categories"] = {"used": len(cat.names), "skipped": len(cat.meta.skipped),
                         "names": cat.names, "config": cat.meta.config}
    res["e3"] = rc.e3_by_site(cat, cache)
    res["e3_catalog_pick"] = rc.catalog_pick(cat)
    res["e3_embedding"] = rc.embedding_baseline(model, cache, cat)
    print("E3: site and config by nested CV on the anchors, then the nulls at that choice ...",
          flush=True)
    res["e3_selection"] = rc.e3_selection(cat, cache, rc.embedding_signs(model, cache),
                                          sel=E3_SELECTION)

    print("E1/E2/E9: states on packaged English text ...", flush=True)
    texts = english_documents("wiki", n=cfg.texts)
    col = ev.collect_states(model, tok, texts, sites=sites, n_positions=cfg.positions)
    res["n_positions"] = int(col["n_positions"])
    res["e1"] = ev.e1_by_site(model, col["states"], col["own_pred"], col["true_next"])
    res["e1_final_fracs"] = ev.e1_sign_lm_head(model, col["states"]["final"], col["own_pred"],
                                               col["true_next"])
    res["e2"] = ev.e2_hamming(col["states"], cache, model, col["own_pred"], col["true_next"],
                              current=col.get("current"))
    res["e9"] = ev.e9_by_site(col["states"])

    print("E8: unsupervised discovery ...", flush=True)
    e8_sites = list(dict.fromkeys([sites[0], sites[len(sites) // 2], sites[-1]]))
    res["e8"] = rc.e8_unsupervised(cache, e8_sites, n_seeds=cfg.seeds, tokenizer=tok)
    res["e8_null"] = rc.e8_iid_null(cache, e8_sites, n_seeds=cfg.seeds, seed=cfg.seed)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main(argv=None) -> dict:
    """Parse the flags, run, write the report; returns the result."""
    cfg = tyro.cli(ReadingConfig, args=argv)
    out = cfg.out_dir  # checked before the long run
    res = run(cfg, argv)
    write_json(out / "reading.json", res)  # the numbers first: the page regenerates from them
    write_plots(res, out)
    md = write_report(out, "reading", res, markdown(res))
    print(f"wrote {md} (+ reading.json, reading_*.png) in {res['seconds']} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
