"""The ``bows`` command: one subcommand per config dataclass (flags = its fields), dispatched
like ``bagofdims`` (:mod:`bagofdims.cli.app`).

    bows small --report reports/bows  # the default CPU run, end to end (sweep, analysis, report)
    bows full                       # the same pipeline with the full-size settings (GPU)
    bows sweep --latents 50,100 --seeds 0,1 --workers 2   # m x wd x seeds, resumable
    bows data --vocab 5000 --out runs/bows/data
    bows train --latent 200 --out runs/bows/m200
    bows analyze runs/bows/m200 --out reports/bows/m200
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import tyro

from bagofdims.cli.app import Table, run

from .data import DataConfig, build_data
from .pipeline import FULL, PipelineConfig, run_pipeline, sweep_config
from .report import AnalyzeConfig, analyze
from .sweep import SweepConfig, run_sweep
from .synthetic import SyntheticConfig, run_synthetic
from .train import TrainConfig, train


@dataclass
class AnalyzeCommand(AnalyzeConfig):
    """Settings of ``bows analyze``; the run directory may be given without a flag."""
    run: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="[RUN]")] = AnalyzeConfig.run
    """Trained run directory to analyze."""


def _train(cfg: TrainConfig) -> None:
    result = train(cfg)
    if isinstance(result, dict):
        print({k: result[k] for k in ("steps", "val_loss", "lr_x_wd_x_steps", "seconds") if k in result})


def _sweep(cfg: SweepConfig) -> None:
    result = run_sweep(cfg)
    print(f"[bows] sweep of {len(result['rows'])} runs ({result['trained_now']} trained now) in "
          f"{result['seconds'] / 60:.1f} min -> {cfg.out}/sweep.md")


def _small(cfg: PipelineConfig) -> None:
    run_pipeline(cfg)


def _full(cfg: PipelineConfig) -> None:
    print_full_estimate(cfg)
    run_pipeline(cfg)


COMMANDS: Table = {
    "data": (DataConfig, build_data, "bag-of-words windows of a corpus"),
    "train": (TrainConfig, _train, "train a tied ReLU autoencoder on the windows (resumable)"),
    "analyze": (AnalyzeCommand, analyze, "geometry analyses of a trained run -> figures and report"),
    "synthetic": (SyntheticConfig, run_synthetic, "toy models on synthetic correlated features"),
    "sweep": (SweepConfig, _sweep, "m x weight decay x seeds: resumable, parallel, one table + plots"),
    "small": (PipelineConfig, _small, "sweep -> analysis -> verdict report, CPU-sized (< 30 min on 2 cores)"),
    "full": (PipelineConfig, _full, "the same pipeline with the full-size settings (GPU, hours)",
             PipelineConfig(**FULL)),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bows`` (returns the exit code)."""
    return run(COMMANDS, argv, prog="bows", description="Bag-of-words superposition toy models.",
               loggers=("bagofdims", "superposition"))


def print_full_estimate(cfg: PipelineConfig) -> None:
    """Expected time of the main full-size model on this machine, before anything starts."""
    import time

    import torch

    from .data import Batch
    from .model import BowsModel, resolve_dtype

    dev = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else
                       "cpu" if cfg.device == "auto" else cfg.device)
    dtype = resolve_dtype("auto", dev)
    V, m, B, active = cfg.vocab, max(int(x) for x in cfg.latents.split(",") if x), cfg.batch_size, 400
    model = BowsModel(V, m).to(dev)  # ~400 active words per window at V 10k, window 20
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B * active,), generator=g)
    batch = Batch(ids, torch.arange(0, B * active, active), torch.arange(B).repeat_interleave(active), B).to(dev)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model.loss(batch, dtype).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    from .sweep import grid

    runs = len(grid(sweep_config(cfg)))
    print(f"[bows] full configuration on {dev}: ~{min(times[1:]) * 1e3:.0f} ms/step x {cfg.steps} steps "
          f"= ~{min(times[1:]) * cfg.steps / 60:.0f} min for the largest model ({runs} models in all, smaller ones faster)",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
