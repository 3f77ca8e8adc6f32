"""The ``bagofdims`` command. Each subcommand is a dataclass config (flags = fields) + a function.

    bagofdims capture --model smollm2 --sites 'resid.*' final --out runs/smollm2/cache
    bagofdims info runs/smollm2/cache
    bagofdims sites --model smollm2
    bagofdims activations --model smollm2 --sites resid.10 --texts file.txt --out runs/acts
    bagofdims catalog --cache runs/smollm2/cache --out runs/smollm2/catalog
    bagofdims query runs/smollm2/catalog color
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bagofdims.config import add_arguments, from_args
from bagofdims.errors import InvalidArgument


@dataclass
class CacheConfig:
    """Build the sign cache of a model (one forward pass per vocabulary token)."""

    model: str = field(default="smollm2", metadata={"help": "embedded name, HF id or local dir"})
    sites: list[str] = field(default_factory=lambda: ["resid.*", "final"],
                             metadata={"help": "site names or globs"})
    out: str = field(default="runs/smollm2/cache", metadata={"help": "cache directory to write"})
    bos: bool | None = field(default=None, metadata={"help": "put the document-start token "
                                                     "before each token (default: for decoder LMs)"})
    bos_token: str | None = field(default=None, metadata={"help": "that token, if not the "
                                                          "model's own (a token string)"})
    tokens: int | None = field(default=None, metadata={"help": "cache only the first N "
                                                       "vocabulary ids (default: all)"})
    batch_size: int = field(default=512, metadata={"help": "tokens per forward pass"})
    magnitudes: bool = field(default=False, metadata={"help": "also store float16 |values|"})
    device: str | None = field(default=None, metadata={"help": "cpu / cuda (default: cuda if any)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing cache"})


def build_cache(cfg: CacheConfig):
    """Build, save and return the sign cache described by ``cfg`` (resumes an interrupted run)."""
    import torch

    from bagofdims.signs.cache import SignCache
    from bagofdims.models import load_model

    out = Path(cfg.out)
    if (out / "meta.json").exists() and not cfg.overwrite:
        print(f"{out} already holds a cache; loading it (pass --overwrite to rebuild).")
        return SignCache.load(out)
    model, tok = load_model(cfg.model, device=cfg.device)
    tokens = None if cfg.tokens is None else torch.arange(cfg.tokens)
    t0 = time.time()
    cache = SignCache.build(model, tok, sites=cfg.sites, bos=cfg.bos, bos_token=cfg.bos_token,
                            tokens=tokens, batch_size=cfg.batch_size, magnitudes=cfg.magnitudes,
                            checkpoint=out.with_name(out.name + ".partial"))
    build_s = time.time() - t0
    cache.save(out, overwrite=cfg.overwrite)
    cache.meta["build_seconds"] = round(build_s, 1)
    return cache


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _prefix(meta: dict) -> str:
    if not meta["bos"]:
        return "each read alone"
    return f"each after {meta.get('bos_token') or meta['bos_id']} (id {meta['bos_id']})"


def summary(cache) -> str:
    """A short human-readable description of a cache on disk."""
    from bagofdims.sites import describe

    meta = cache.meta
    files = [cache.path / f for f in meta.get("files", {})] if cache.path else []
    disk = sum(f.stat().st_size for f in files)
    dense = len(cache) * sum(meta["sites"].values()) * 4
    lines = [
        f"sign cache of {meta['model']} at {cache.path}",
        f"  tokens      {len(cache):,} of a {meta['vocab_size']:,}-token vocabulary, {_prefix(meta)}",
        f"  sites       {len(meta['sites'])}: {describe(meta['sites'])}",
        f"  widths      {sorted(set(meta['sites'].values()))}",
        f"  on disk     {_size(disk)} (float32 states would take {_size(dense)}: "
        f"1/{dense / max(disk, 1):.0f})",
        f"  weights     {meta['weights']}  tokenizer {meta['tokenizer']}  created {meta['created']}",
    ]
    if meta.get("build_seconds", 0) >= 0.1:
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
    from bagofdims.signs.cache import SignCache

    print(summary(SignCache.load(ns.path)))


def _cmd_sites(ns) -> None:
    from bagofdims.models import load_model
    from bagofdims.sites import all_sites, describe

    model, _ = load_model(ns.model, device="cpu")
    sites = all_sites(model)
    print(f"{ns.model}: {describe(sites)}")
    if ns.verbose:
        for s in sites.values():
            print(f"  {s.name:14s} {s.on:6s} {s.module_path}")


def _cmd_activations(ns) -> None:
    from bagofdims.models import load_model
    from bagofdims.stream import ActivationStore, write_activations

    cfg = from_args(ActivationsConfig, ns)
    model, tok = load_model(cfg.model, device=cfg.device)
    texts = [line.rstrip("\n") for line in open(cfg.texts, encoding="utf-8") if line.strip()]
    write_activations(model, tok, texts, cfg.sites, cfg.out, batch_size=cfg.batch_size,
                      max_length=cfg.max_length)
    store = ActivationStore(cfg.out)
    print(f"{store.n_tokens:,} tokens of {len(texts):,} documents, sites {store.sites} -> {cfg.out}")


@dataclass
class CatalogConfig:
    """Discover one feature per category at each site of a sign cache, and save the catalog."""

    cache: str = field(default="runs/smollm2/cache", metadata={"help": "sign cache directory"})
    out: str = field(default="runs/smollm2/catalog", metadata={"help": "catalog directory"})
    categories: str = field(default="default", metadata={"help": "shipped set or JSON file"})
    sites: list[str] = field(default_factory=lambda: ["resid.*"], metadata={"help": "site globs"})
    method: str = field(default="topk", metadata={"help": "topk | tau | null"})
    k: int = field(default=32, metadata={"help": "dims per feature (topk)"})
    tau: float = field(default=0.75, metadata={"help": "per-dim AUC threshold (tau)"})
    n_anchors: int = field(default=50, metadata={"help": "anchors per category"})
    forms: str = field(default="initial", metadata={"help": "member tokens: initial (after a "
                                                    "space) | both (with or without) | bare"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing catalog"})


def build_catalog(cfg: CatalogConfig):
    """Build and save the catalog described by ``cfg``."""
    from bagofdims.signs.cache import SignCache
    from bagofdims.catalog import Catalog
    from bagofdims.features.discovery import DiscoveryConfig

    cache = SignCache.load(cfg.cache)
    cat = Catalog.build(cache, categories=cfg.categories, sites=cfg.sites,
                        config=DiscoveryConfig(method=cfg.method, k=cfg.k, tau=cfg.tau),
                        n_anchors=cfg.n_anchors, forms=cfg.forms)
    cat.save(cfg.out, overwrite=cfg.overwrite)
    return cat


def _cmd_catalog(ns) -> None:
    import statistics

    cat = build_catalog(from_args(CatalogConfig, ns))
    print(f"{cat!r} -> {ns.out}")
    for site in cat.sites:
        aucs = [f.metrics["held_out_auc"] for f in cat.at(site)]
        hard = [f.metrics["hard_auc"] for f in cat.at(site)]
        print(f"  {site:10s} median held-out AUC {statistics.median(aucs):.3f}   "
              f"vs other categories {statistics.median(hard):.3f}")


def _cmd_query(ns) -> None:
    from bagofdims.catalog import Catalog

    cat = Catalog.load(ns.catalog)
    if ns.dim is not None:
        site = ns.site or cat.sites[0]
        ex = cat.explain_dim(site, ns.dim, k=ns.k)
        print(f"{site} dim {ns.dim}: positive on {ex['positive_rate']:.1%} of the vocabulary")
        label = ("most +", "most -") if ex["ranked"] else ("some +", "some -")
        print(f"  {label[0]}  {' '.join(repr(t) for t in ex['most_positive'])}")
        print(f"  {label[1]}  {' '.join(repr(t) for t in ex['most_negative'])}")
        if not ex["ranked"]:
            print("  (build the cache with --magnitudes to rank tokens by value)")
        print(f"  in features: {', '.join(f'{n} ({s:+d})' for n, s in ex['features']) or 'none'}")
        return
    try:
        feats = [cat.get(ns.name, ns.site)]
    except KeyError:
        feats = cat.search(ns.name)
        if not feats:
            raise
        print(f"no feature named '{ns.name}'; matches: {', '.join(f.name for f in feats[:10])}")
        feats = feats[:1]
    for f in feats:
        m = f.metrics
        print(f"{f.name}  [{f.id}]  {len(f)} dims at {f.site}  ({f.method}, {f.params.get('k')})")
        print(f"  held-out AUC {m.get('held_out_auc', float('nan')):.3f}   vs other categories "
              f"{m.get('hard_auc', float('nan')):.3f}   mean per-dim AUC "
              f"{m.get('mean_dim_auc', float('nan')):.3f}   fires at >= {f.threshold:.3f}")
        dims = ", ".join(f"{int(d)}{'+' if s > 0 else '-'}" for d, s in zip(f.dims[:16], f.signs[:16]))
        print(f"  dims   {dims}{' ...' if len(f) > 16 else ''}")
        print(f"  anchors  {' '.join(w.strip() for w in f.anchor_words[:12])} ...")
        top = cat.top_tokens(f.name, k=ns.k, site=f.site)
        print("  top tokens  " + "  ".join(f"{t.strip()!s}:{s:.2f}" for t, s in top))


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
command("catalog", "discover category features and save a catalog", CatalogConfig)(_cmd_catalog)


def _query_args(p):
    p.add_argument("catalog", help="catalog directory")
    p.add_argument("name", nargs="?", default="", help="feature name or search text")
    p.add_argument("--site", default=None, help="site (default: the feature's best)")
    p.add_argument("--dim", type=int, default=None, help="explain one dimension instead")
    p.add_argument("-k", type=int, default=12, help="tokens to show")


command("query", "show a feature of a catalog (or explain a dim)", extra=_query_args)(_cmd_query)


def _cmd_steer(ns) -> None:
    from bagofdims.cli.steer import SteerConfig, format_result, steer

    cfg = from_args(SteerConfig, ns)
    if cfg.positions not in ("all", "last"):
        raise InvalidArgument("--positions must be 'all' or 'last'.")
    if not cfg.feature:
        raise InvalidArgument("pass --feature NAME (a concept of the catalog, e.g. --feature country).")
    print(format_result(steer(cfg), cfg.width))


def _steer_config():
    from bagofdims.cli.steer import SteerConfig

    return SteerConfig


command("steer", "generate with and without a sign flip, side by side", _steer_config)(_cmd_steer)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bagofdims", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config, fn, extra) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config is not None:
            add_arguments(p, config if isinstance(config, type) else config())
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
