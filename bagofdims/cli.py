"""The ``bagofdims`` command. Each subcommand is a dataclass config (flags = fields) + a function.

    bagofdims capture --model smollm2 --sites 'resid.*' final --out runs/smollm2
    bagofdims info runs/smollm2
    bagofdims sites --model smollm2
    bagofdims activations --model smollm2 --sites resid.10 --texts file.txt --out runs/acts
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import add_arguments, from_args


@dataclass
class CacheConfig:
    """Build the sign cache of a model (one forward pass per vocabulary token)."""

    model: str = field(default="smollm2", metadata={"help": "embedded name, HF id or local dir"})
    sites: list[str] = field(default_factory=lambda: ["resid.*", "final"],
                             metadata={"help": "site names or globs"})
    out: str = field(default="runs/smollm2", metadata={"help": "cache directory to write"})
    bos: bool | None = field(default=None, metadata={"help": "put BOS before each token "
                                                     "(default: only for Gemma-style models)"})
    tokens: int | None = field(default=None, metadata={"help": "cache only the first N "
                                                       "vocabulary ids (default: all)"})
    batch_size: int = field(default=512, metadata={"help": "tokens per forward pass"})
    magnitudes: bool = field(default=False, metadata={"help": "also store float16 |values|"})
    device: str | None = field(default=None, metadata={"help": "cpu / cuda (default: cuda if any)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing cache"})


def build_cache(cfg: CacheConfig):
    """Build, save and return the sign cache described by ``cfg`` (resumes an interrupted run)."""
    import torch

    from .cache import SignCache
    from .models import load_model

    out = Path(cfg.out)
    if (out / "meta.json").exists() and not cfg.overwrite:
        print(f"{out} already holds a cache; loading it (pass --overwrite to rebuild).")
        return SignCache.load(out)
    model, tok = load_model(cfg.model, device=cfg.device)
    tokens = None if cfg.tokens is None else torch.arange(cfg.tokens)
    t0 = time.time()
    cache = SignCache.build(model, tok, sites=cfg.sites, bos=cfg.bos, tokens=tokens,
                            batch_size=cfg.batch_size, magnitudes=cfg.magnitudes,
                            checkpoint=out.with_name(out.name + ".partial"))
    build_s = time.time() - t0
    cache.save(out, overwrite=cfg.overwrite)
    cache.meta["build_seconds"] = round(build_s, 1)
    return cache


def summary(cache) -> str:
    """A short human-readable description of a cache on disk."""
    from .sites import describe

    meta = cache.meta
    files = [cache.path / f for f in meta.get("files", {})] if cache.path else []
    disk = sum(f.stat().st_size for f in files)
    dense = len(cache) * sum(meta["sites"].values()) * 4
    lines = [
        f"sign cache of {meta['model']} at {cache.path}",
        f"  tokens      {len(cache):,} of a {meta['vocab_size']:,}-token vocabulary (bos={meta['bos']})",
        f"  sites       {len(meta['sites'])}: {describe(meta['sites'])}",
        f"  widths      {sorted(set(meta['sites'].values()))}",
        f"  on disk     {disk / 2**20:.1f} MiB (float32 states would take {dense / 2**20:.0f} MiB: "
        f"1/{dense / max(disk, 1):.0f})",
        f"  weights     {meta['weights']}  tokenizer {meta['tokenizer']}  created {meta['created']}",
    ]
    if "build_seconds" in meta:
        lines.append(f"  built in    {meta['build_seconds']} s "
                     f"({len(cache) / max(meta['build_seconds'], 1e-9):,.0f} tokens/s)")
    return "\n".join(lines)


@dataclass
class ActivationsConfig:
    """Capture hidden states of a text file (one document per line) to sharded safetensors."""

    texts: str = field(metadata={"help": "text file, one document per line"})
    out: str = field(metadata={"help": "output directory (resumable)"})
    model: str = field(default="smollm2", metadata={"help": "embedded name, HF id or local dir"})
    sites: list[str] = field(default_factory=lambda: ["resid.*"], metadata={"help": "sites"})
    batch_size: int = field(default=8, metadata={"help": "documents per forward pass"})
    max_length: int = field(default=256, metadata={"help": "truncate documents to N tokens"})
    device: str | None = field(default=None, metadata={"help": "cpu / cuda"})


def _cmd_capture(ns) -> None:
    cache = build_cache(from_args(CacheConfig, ns))
    print(summary(cache))


def _cmd_info(ns) -> None:
    from .cache import SignCache

    print(summary(SignCache.load(ns.path)))


def _cmd_sites(ns) -> None:
    from .models import load_model
    from .sites import all_sites, describe

    model, _ = load_model(ns.model, device="cpu")
    sites = all_sites(model)
    print(f"{ns.model}: {describe(sites)}")
    if ns.verbose:
        for s in sites.values():
            print(f"  {s.name:14s} {s.on:6s} {s.module_path}")


def _cmd_activations(ns) -> None:
    from .models import load_model
    from .stream import ActivationStore, write_activations

    cfg = from_args(ActivationsConfig, ns)
    model, tok = load_model(cfg.model, device=cfg.device)
    texts = [line.rstrip("\n") for line in open(cfg.texts, encoding="utf-8") if line.strip()]
    write_activations(model, tok, texts, cfg.sites, cfg.out, batch_size=cfg.batch_size,
                      max_length=cfg.max_length)
    store = ActivationStore(cfg.out)
    print(f"{store.n_tokens:,} tokens of {len(texts):,} documents, sites {store.sites} -> {cfg.out}")


COMMANDS = {}  # name -> (help, config dataclass or None, function, extra-args adder)


def command(name, help_text, config=None, extra=None):
    def register(fn):
        COMMANDS[name] = (help_text, config, fn, extra)
        return fn

    return register


command("capture", "build the sign cache of a model", CacheConfig)(_cmd_capture)
command("info", "describe a sign cache on disk",
        extra=lambda p: p.add_argument("path", help="cache directory"))(_cmd_info)
command("sites", "list the sites of a model",
        extra=lambda p: (p.add_argument("--model", default="smollm2"),
                         p.add_argument("-v", "--verbose", action="store_true")))(_cmd_sites)
command("activations", "capture hidden states of texts to disk", ActivationsConfig)(_cmd_activations)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bagofdims", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config, fn, extra) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config is not None:
            add_arguments(p, config)
        if extra is not None:
            extra(p)
        p.set_defaults(_fn=fn)
    ns = parser.parse_args(argv)
    try:
        ns._fn(ns)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        # Errors of ours carry the fix in their message; no traceback needed.
        print(f"bagofdims {ns.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
