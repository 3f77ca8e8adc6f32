"""E9 on one model, per site (the driver of ``scripts/reproduce_mi.py``): states at every
``resid`` site and ``final`` on the packaged Wikipedia leads, as the reading report collects them,
and the sign cache for the type level. Estimators: :mod:`experiments.mi`; page:
:mod:`experiments.mi_report`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

import bagofdims as bd
from bagofdims.errors import InvalidArgument
from bagofdims.signs.cache import SignCache
from bagofdims.sites import resolve
from bagofdims.text import english_documents
from experiments import mi, mi_report
from experiments import reading_eval as ev
from experiments.report import command
from experiments.runs import RunConfig

SCRIPT = "scripts/reproduce_mi.py"
SITES = ("resid.*", "final")


@dataclass
class MiConfig(RunConfig):
    """Reproduce E9 (pairwise sign MI) on one model, per site."""

    positions: int = 1000
    """text positions of packaged Wikipedia leads (the reading report's E9 uses 1000)"""
    texts: int = 400
    """packaged documents to draw the positions from"""
    cache: str | None = None
    """sign cache for the type-level MI (default: <runs>/<model>/cache)"""
    repeats: int = 8
    """shuffles of the position-level baseline (its spread sets the basis rule's threshold)"""
    type_repeats: int = 4
    """shuffles of the type-level baseline"""
    seed: int = 0
    """seed of the rotation and the shuffles"""


def _type_level(cfg: MiConfig, model, tok, sites: list[str], res: dict) -> None:
    path = Path(cfg.cache) if cfg.cache else cfg.run_dir / "cache"
    if not (path / "meta.json").exists():
        res["type_level"] = None
        res["type_level_note"] = (f"not computed: no cache at {path}; build one with `bagofdims "
                                  f"capture --model {cfg.model} --sites 'resid.*' final --out "
                                  f"{path}` and rerun")
        return
    cache = SignCache.load(path, model=model, tokenizer=tok)
    cached = [s for s in sites if s in cache.sites]
    if not cached:
        raise InvalidArgument(f"the cache at {path} has none of the sites {sites}; rebuild it "
                              "with --sites 'resid.*' final.")
    res["type_level"] = mi.type_level_mi(cache, cached, seed=cfg.seed, repeats=cfg.type_repeats)
    skipped = [s for s in sites if s not in cache.sites]
    vocab = "the full vocabulary" if cache.meta.full_vocab else \
        f"a subset of the vocabulary ({len(cache):,} of {cache.meta.vocab_size:,} tokens)"
    res["type_level_note"] = (f"Cache {path}: {vocab}, each token read "
                              f"{'after the start token' if cache.meta.bos else 'alone'}"
                              + (f"; sites not in it: {', '.join(skipped)}" if skipped else "")
                              + ".")


def run(cfg: MiConfig, argv=None) -> dict:
    """Compute the page's numbers (the content of ``mi.json``)."""
    if cfg.positions < 2 or cfg.repeats < 2 or cfg.type_repeats < 2:
        raise InvalidArgument("--positions, --repeats and --type-repeats must each be at least 2.")
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    model, tok = bd.load_model(cfg.model, device="cpu")
    sites = [s.name for s in resolve(model, list(SITES))]
    print(f"E9: states at {len(sites)} sites on packaged English text ...", flush=True)
    col = ev.collect_states(model, tok, english_documents("wiki", n=cfg.texts), sites=sites,
                            n_positions=cfg.positions)
    res: dict = {"model": cfg.model, "command": command(SCRIPT, argv), "sites": sites,
                 "n_positions": int(col["n_positions"]), "n_texts": int(col["n_texts"]),
                 "seed": cfg.seed, "repeats": cfg.repeats, "type_repeats": cfg.type_repeats}
    res["position"] = mi.mi_by_site(col["states"], seed=cfg.seed, repeats=cfg.repeats)
    print("E9: type level on the sign cache ...", flush=True)
    _type_level(cfg, model, tok, sites, res)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main(argv=None) -> dict:
    """Parse the flags, run, write ``mi.json`` and ``mi.md``; returns the result."""
    cfg = tyro.cli(MiConfig, args=argv)
    out = cfg.out_dir  # checked before the run
    res = run(cfg, argv)
    md = mi_report.write(out, res)
    print(f"wrote {md} (+ mi.json) in {res['seconds']} s")
    return res

