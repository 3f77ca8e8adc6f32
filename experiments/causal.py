"""The causal report of one model: E5 (do category features survive into the keys and values?),
E6 (do FFN down-projection columns write them?) and E7 (sign flips, in
:mod:`experiments.sign_flips`); ``causal.md``, ``causal.json`` and five plots.

    python scripts/reproduce_causal.py --model smollm2 [--layer-step 3] [--concepts 12]

The sign cache (sites ``embed``, ``resid.*``, ``k.*``, ``v.*``) is read from ``--cache`` (default
``<runs>/<model>/causal_cache``) or built there first (resumable); with ``--background N`` only
the category tokens plus N random vocabulary tokens are cached (for large vocabularies).
Layers are every ``--layer-step``-th block (always including the last). E7's control
distributions (``--draws`` of each kind per concept, ``--depth-draws`` per layer) are the largest
part: the shipped SmolLM2 page took 66 minutes on a 2-core CPU shared with other jobs (E7 55 of
them, about 30,000 prompt rows through the model).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

import bagofdims as bd
from bagofdims.categories import load_categories, map_categories
from bagofdims.errors import InvalidArgument, MissingFile
from bagofdims.features.discovery import DiscoveryConfig
from bagofdims.sites import find_blocks
from bagofdims.steering.tracing import kv_survival, random_init_copy, writer_controls
from experiments.causal_report import markdown, plots
from experiments.kv_rotary import with_rotary_keys
from experiments.report import command, write_json, write_report
from experiments.runs import RunConfig, entry, load_or_build_cache
from experiments.sign_flips import run_e7

__all__ = ["CausalConfig", "layer_grid", "main", "run", "run_e6"]

SCRIPT = "scripts/reproduce_causal.py"
CACHE_SITES = ("embed", "resid.*", "k.*", "v.*")


@dataclass
class CausalConfig(RunConfig):
    """Reproduce E5 (K/V survival), E6 (FFN writers) and E7 (sign flips) on a real model."""

    cache: str | None = None
    """sign cache folder (default: <runs>/<model>/causal_cache)"""
    layer_step: int = 3
    """E6/E7 use every layer_step-th block (and the last)"""
    e5_step: int = 6
    """layer step of E5 (its slowest part)"""
    concepts: int = 12
    """concepts flipped in E7"""
    prompts: int = 10
    """E7 evaluation prompts per concept (every reported effect is measured on these)"""
    select_prompts: int = 5
    """E7 prompts per concept that choose its layer (disjoint from the evaluation prompts)"""
    draws: int = 50
    """E7 control draws per kind (magnitude-stratified, disjoint) at each concept's layer"""
    depth_draws: int = 10
    """E7 stratified control draws per layer for the depth profile"""
    rows_per_pass: int = 128
    """E7 batch rows (prompts x flip patterns) per forward pass"""
    top_n: int = 200
    """coalition size (E6)"""
    background: int = 0
    """cache only the category tokens + this many random ones (0: the whole vocabulary)"""
    tau: float = 0.75
    """E6 also on the paper's rule: every dim with per-dim anchor AUC >= tau"""
    min_dims: int = 8
    """E6 tau-rule features with fewer dims are left out (each cross-validated half needs some)"""
    wide_k: int = 256
    """E6 also on top-wide_k features (the paper's features have hundreds of dims)"""
    reuse_e7: bool = False
    """keep E7 from the causal.json already in the output folder (E5 and E6 are recomputed); its
    command and time stay recorded under e7_from"""
    threads: int = 1
    seed: int = 0


def layer_grid(n_layers: int, step: int) -> list[int]:
    """Every ``step``-th block counted from ``step - 1``, and always the last one."""
    return sorted(set(range(step - 1, n_layers, step)) | {n_layers - 1})


def _cache_tokens(model, tok, background: int):
    """``None`` (the whole vocabulary), or the default categories' tokens + ``background``
    random ones (seeded)."""
    if not background:
        return None
    mapped, _ = map_categories(load_categories("default"), tok)
    ids = {i for c in mapped for i in (*c.anchors, *c.held_out)}
    g = torch.Generator().manual_seed(0)
    n_vocab = min(len(tok), model.get_input_embeddings().weight.shape[0])
    ids |= set(torch.randperm(n_vocab, generator=g)[:background].tolist())
    return torch.tensor(sorted(ids))


def run_e6(model, cat, layers, top_n: int, seed: int, min_dims: int = 0) -> dict:
    """FFN writer summaries per layer and polarity: the model, a Gaussian matrix, and a
    randomly initialised copy of the model; features with fewer than ``min_dims`` dims are left
    out (a layer with none left is omitted)."""
    rnd = random_init_copy(model, seed)
    out = {}
    for L in layers:
        feats = [f for f in cat.at(f"resid.{L}") if len(f.dims) >= min_dims]
        if not feats:
            continue
        row = {}
        for pol in ("positive", "both"):
            res = writer_controls(model, feats, L, threshold=0.7, top_n=top_n, polarity=pol,
                                  seed=seed, random_model=rnd)
            row[pol] = {k: v.summary() for k, v in res.items()}
        out[f"resid.{L}"] = row
    return out


def _dims(cat, layers) -> dict:
    """Dims per feature at each layer: min, median, max."""
    out = {}
    for L in layers:
        n = sorted(len(f.dims) for f in cat.at(f"resid.{L}"))
        out[f"resid.{L}"] = [n[0], n[len(n) // 2], n[-1]] if n else []
    return out


def _previous_e7(cfg: CausalConfig) -> dict:
    path = cfg.out_dir / "causal.json"
    if not path.exists():
        raise MissingFile(f"--reuse-e7 reads E7 from {path}, which does not exist; run "
                          "without --reuse-e7 first.")
    old = json.loads(path.read_text())
    if old.get("model") != cfg.model or old.get("seed") != cfg.seed:
        raise InvalidArgument(f"{path} was made for model {old.get('model')} seed "
                              f"{old.get('seed')}, not {cfg.model} seed {cfg.seed}.")
    return {"e7": old["e7"], "e7_from": old.get("e7_from") or {
        "command": old.get("command"), "seconds": old.get("seconds"), "layers": old.get("layers")}}


def run(cfg: CausalConfig, argv=None) -> dict:
    """Compute the report's numbers (the content of ``causal.json``)."""
    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    previous = _previous_e7(cfg) if cfg.reuse_e7 else None
    model, tok = bd.load_model(cfg.model)
    cache_path = Path(cfg.cache) if cfg.cache else cfg.run_dir / "causal_cache"
    cache = load_or_build_cache(model, tok, cache_path, CACHE_SITES,
                                tokens=_cache_tokens(model, tok, cfg.background))
    n_layers = len(find_blocks(model)[1])
    layers = layer_grid(n_layers, cfg.layer_step)
    print(f"{cfg.model}: {len(cache)} cached tokens, layers {layers}", flush=True)

    t0 = time.time()
    e5_layers = layer_grid(n_layers, cfg.e5_step)
    rotated, agreement = with_rotary_keys(cache, model, e5_layers)
    e5 = kv_survival(rotated, layers=e5_layers, tokenizer=tok, thresholds=(0.75, 0.9),
                     kinds=("resid", "k", "k_rot", "v"))
    e5.pop("catalog")
    e5["layers"] = e5_layers
    e5["k_sign_agreement"] = agreement
    # resid features at the E6/E7 layers (one catalog, every category)
    cat = bd.Catalog.build(cache, sites=[f"resid.{L}" for L in layers], tokenizer=tok,
                           progress=False, evidence=None)  # only the features are used here
    print(f"E5 done ({time.time() - t0:.0f}s): {len(cat.names)} categories", flush=True)
    t0 = time.time()
    e6 = run_e6(model, cat, layers, cfg.top_n, cfg.seed)
    e6_rules = {}
    for label, config, min_dims in (
            (f"τ = {cfg.tau}, ≥ {cfg.min_dims} dims", DiscoveryConfig(method="tau", tau=cfg.tau),
             cfg.min_dims),
            (f"top-{cfg.wide_k}", DiscoveryConfig(k=cfg.wide_k), 0)):
        other = bd.Catalog.build(cache, sites=[f"resid.{L}" for L in layers], tokenizer=tok,
                                 config=config, progress=False, evidence=None)
        e6_rules[label] = {"e6": run_e6(model, other, layers, cfg.top_n, cfg.seed, min_dims),
                           "dims": _dims(other, layers), "min_dims": min_dims}
    print(f"E6 done ({time.time() - t0:.0f}s)", flush=True)
    t0 = time.time()
    if previous is None:
        with torch.no_grad():
            e7 = run_e7(model, tok, cat, layers, cfg.concepts, cfg.select_prompts, cfg.prompts,
                        cfg.draws, cfg.depth_draws, cfg.seed, cfg.rows_per_pass)
        print(f"E7 done ({time.time() - t0:.0f}s)", flush=True)
    elif previous["e7_from"].get("layers") not in (None, layers):
        raise InvalidArgument(f"the E7 kept from causal.json ran at layers "
                              f"{previous['e7_from']['layers']}, not {layers}: pass the same "
                              "--layer-step, or run without --reuse-e7.")
    else:
        e7 = previous["e7"]
    return {
        **({"e7_from": previous["e7_from"]} if previous else {}),
        "e6_rules": e6_rules, "e6_dims": _dims(cat, layers), "model": cfg.model, "cache": str(cache_path), "n_cached_tokens": len(cache),
        "full_vocab": bool(cache.meta.full_vocab), "layers": layers,
        "n_layers": n_layers, "seed": cfg.seed, "threads": cfg.threads,
        "command": command(SCRIPT, argv),
        "e5": e5, "e6": e6, "e7": e7, "seconds": round(time.time() - t_start, 1),
    }


def main(argv=None) -> dict:
    """Parse the flags, run, write the report; returns the result."""
    cfg = tyro.cli(CausalConfig, args=argv)
    out = cfg.out_dir  # checked before the long run
    res = run(cfg, argv)
    write_json(out / "causal.json", res)  # the numbers first: the page regenerates from them
    files = plots(res, out)
    md = write_report(out, "causal", res, markdown(res, files))
    print(f"wrote {md} (+ causal.json, causal_*.png) in {res['seconds']} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
