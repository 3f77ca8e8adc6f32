"""The ``bows`` command; each subcommand's flags are generated from its config dataclass."""
from __future__ import annotations

import argparse
import logging
import sys

from bagofdims.config import add_arguments

COMMANDS = {
    "data": ("superposition.data", "DataConfig", "build_data", None),
    "train": ("superposition.train", "TrainConfig", "train", None),
    "analyze": ("superposition.report", "AnalyzeConfig", "analyze", "run"),
    "synthetic": ("superposition.synthetic", "SyntheticConfig", "run_synthetic", None),
    "small": ("superposition.pipeline", "PipelineConfig", "run_pipeline", None),
    "full": ("superposition.pipeline", "PipelineConfig", "run_pipeline", None),
}


def main(argv: list[str] | None = None) -> int:
    import importlib

    parser = argparse.ArgumentParser(prog="bows", description="Bag-of-words superposition toy models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (mod, cls_name, _, pos) in COMMANDS.items():
        cls = getattr(importlib.import_module(mod), cls_name)
        defaults = None
        if name == "full":
            from .pipeline import FULL
            defaults = FULL
        p = sub.add_parser(name, help=(cls.__doc__ or "").splitlines()[0])
        add_arguments(p, cls, pos, defaults)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mod, cls_name, fn, _ = COMMANDS[args.command]
    module = importlib.import_module(mod)
    kwargs = {k: v for k, v in vars(args).items() if k != "command"}
    cfg = getattr(module, cls_name)(**kwargs)
    if args.command == "full":
        _print_full_estimate(cfg)
    result = getattr(module, fn)(cfg)
    if isinstance(result, dict) and args.command == "train":
        print({k: result[k] for k in ("steps", "val_loss", "lr_x_wd_x_steps", "seconds")})
    return 0


def _print_full_estimate(cfg) -> None:
    """Expected time of the main full-size model on this machine, before anything starts."""
    import time

    import torch

    from .data import Batch
    from .model import BowsModel, resolve_dtype

    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if cfg.device == "auto" else cfg.device))
    dtype = resolve_dtype("auto", dev)
    V, m, B, active = cfg.vocab, cfg.latent, cfg.batch_size, 400  # ~400 active words per window at V 10k, w 20
    model = BowsModel(V, m).to(dev)
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
    windows = 350_000 if "wikitext" in cfg.corpus else 21_000  # packaged corpus: ~21k train windows
    steps = cfg.epochs * windows / B
    runs = 1 + len([x for x in cfg.compare_latents.split(",") if x]) + len([x for x in cfg.compare_weight_decays.split(",") if x])
    print(f"[bows] full configuration on {dev}: ~{min(times[1:]) * 1e3:.0f} ms/step x ~{steps:.0f} steps "
          f"= ~{min(times[1:]) * steps / 60:.0f} min for the main model ({runs} models in all, smaller ones faster)",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
