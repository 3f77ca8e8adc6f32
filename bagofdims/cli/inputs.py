"""``bagofdims capture --inputs SRC``: a sign cache over examples (images, clips, texts).

    bagofdims capture --model DIR --inputs data/shapes --pool cls   # -> runs/DIR/inputs-cache
    bagofdims catalog --cache runs/DIR/inputs-cache                 # categories = the labels
    bagofdims query runs/DIR/catalog circle                         # top examples, not tokens

Examples are read by :mod:`bagofdims.example_sources`; where each came from is kept beside the
cache (``sources.json``) so queries can name the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bagofdims.cli.options import check_device, run_dir
from bagofdims.errors import AlreadyExists, CacheError, InvalidArgument

EXAMPLE_BATCH = 32  # examples per forward pass unless --batch-size says otherwise


def parse_cli_pool(text: str):
    """``mean``, ``cls``, ``last``, a position ``N`` or a range ``A:B`` (either end may be empty)."""
    text = text.strip()
    if text in ("mean", "cls", "last") or text.startswith(("pos:", "range:")):
        return text
    try:
        if ":" in text:
            start, stop = text.split(":")
            return (int(start) if start else None, int(stop) if stop else None)
        return int(text)
    except ValueError:
        raise InvalidArgument(f"--pool {text!r}: use mean, cls, last, a position N or a range "
                              "A:B of positions.") from None


def check_inputs_config(cfg) -> None:
    """The checks of an example capture that need no model."""
    if cfg.tokens is not None or cfg.bos is not None or cfg.bos_token is not None:
        raise InvalidArgument("--tokens, --bos and --bos-token are for vocabulary caches; drop "
                              "them with --inputs.")
    if cfg.limit is not None and cfg.limit < 1:
        raise InvalidArgument(f"--limit must be at least 1, got {cfg.limit}.")
    from bagofdims.signs.pooling import parse_pool

    parse_pool(parse_cli_pool(cfg.pool))
    check_device(cfg.device)


def build_example_cache(cfg, model=None, processor=None):
    """Build, save and return the example cache of ``cfg`` (or reuse the one in ``cfg.out`` if
    it holds the same examples, model and settings); None on a process other than the main one."""
    from bagofdims.sites import default_sites
    from bagofdims.example_sources import read_examples, write_sources
    from bagofdims.models import load_model
    from bagofdims.parallel import world
    from bagofdims.signs.cache import SignCache
    from bagofdims.signs.pooling import parse_pool

    check_inputs_config(cfg)
    out = Path(cfg.out or run_dir(cfg.model, "inputs-cache"))
    exists = out.exists()
    if exists and not cfg.overwrite and not (out / "meta.json").exists():
        raise AlreadyExists(f"{out} exists and is not a sign cache; choose another --out, or pass "
                            "--overwrite to replace it.")
    here = world()  # several processes under `accelerate launch`: each builds a share
    if model is None:
        model, processor = load_model(cfg.model, device=here.rank_device(check_device(cfg.device)))
    ex = read_examples(cfg.inputs, processor, labels=cfg.labels, groups=cfg.groups,
                       column=cfg.column, limit=cfg.limit)
    sites = cfg.sites or default_sites(model)
    pool = parse_pool(parse_cli_pool(cfg.pool))
    if exists and not cfg.overwrite:
        cache = reuse_example_cache(out, model, processor, ex, sites, pool.name, cfg.magnitudes)
    else:
        cache = SignCache.build_inputs(
            model, processor, ex.items, sites=sites, pool=pool, labels=ex.labels,
            groups=ex.groups, batch_size=cfg.batch_size or EXAMPLE_BATCH,
            magnitudes=cfg.magnitudes, checkpoint=out.with_name(out.name + ".partial"),
            processor_kwargs=ex.processor_kwargs, progress=here.is_main,
            **({"chunk_size": cfg.chunk_size} if cfg.chunk_size else {}))
        if cache is None:  # the main process assembles and saves it
            return None
        cache.save(out, overwrite=cfg.overwrite)
    if here.is_main:
        write_sources(out, ex)
    return cache


def reuse_example_cache(out: Path, model, processor, ex, sites, pool: str, magnitudes: bool):
    """The example cache in ``out`` if it matches; else an error naming what differs."""
    from bagofdims.signs.cache import SignCache
    from bagofdims.signs.examples import ExampleSet, processor_fingerprint, reader_of
    from bagofdims.sites import describe, resolve

    redo = "Pass --overwrite to rebuild it, or choose another --out."
    try:
        cache = SignCache.load(out)
    except CacheError as err:
        raise CacheError(f"{out} holds a damaged sign cache: {err} {redo}") from err
    meta = cache.meta
    if not cache.is_examples:
        raise AlreadyExists(f"{out} holds a vocabulary cache, not one over examples. {redo}")
    if cache.meta.weights != _weights(model) or \
            meta.tokenizer != processor_fingerprint(reader_of(processor, ex.items[0])):
        raise AlreadyExists(f"{out} already holds a cache of another model or processor "
                            f"({meta.model}). {redo}")
    wanted = [s.name for s in resolve(model, sites)]
    diffs = []
    if meta.example_sha256 != ExampleSet(ex.items).sha256():
        diffs.append(f"other examples ({meta.n_tokens} cached, {len(ex)} given)")
    if cache.sites != wanted:
        diffs.append(f"sites {describe(cache.sites)} (asked: {describe(wanted)})")
    if meta.pool != pool:
        diffs.append(f"pooling {meta.pool} (asked: {pool})")
    if meta.labels != ex.labels or meta.groups != ex.groups:
        diffs.append("other labels or groups")
    if meta.magnitudes != magnitudes:
        diffs.append(f"magnitudes {'stored' if meta.magnitudes else 'not stored'}")
    if diffs:
        raise AlreadyExists(f"{out} already holds an example cache with {'; '.join(diffs)}. {redo}")
    print(f"{out} already holds this cache (same examples, model and settings); reusing it.")
    return cache


def _weights(model) -> str:
    from bagofdims.models import weight_fingerprint

    return weight_fingerprint(model)


def example_summary(cache) -> str:
    """A short human-readable description of an example cache."""
    from bagofdims.example_sources import read_sources
    from bagofdims.sites import describe

    meta = cache.meta
    found = read_sources(cache.path) or {}
    labels = Counter(v for v in meta.labels or [] if v is not None)
    shown = ", ".join(f"{k} ({n})" for k, n in sorted(labels.items())[:12])
    lines = [
        f"example cache of {meta.model} at {cache.path}",
        f"  examples    {len(cache):,}" + (f" {found['kind']} from {found['origin']}" if found else ""),
        f"  labels      {len(labels)}: {shown}{' ...' if len(labels) > 12 else ''}" if labels
        else "  labels      none",
        f"  groups      {len(set(meta.groups))}" if meta.groups else "  groups      none",
        f"  pooling     {meta.pool}" + (f"   processor {meta.processor_kwargs}"
                                        if meta.processor_kwargs else ""),
        f"  sites       {len(meta.sites)}: {describe(meta.sites)}",
        f"  widths      {sorted(set(meta.sites.values()))}",
        f"  weights     {meta.weights}  processor {meta.tokenizer}  created {meta.created}",
    ]
    return "\n".join(lines)


def example_source(cat, row: int) -> str:
    """The file (or table row) a catalog's cached example came from; "" if not recorded."""
    found = read_sources_of(cat)
    if not found or not 0 <= row < len(found.get("sources", [])):
        return ""
    return found["sources"][row]


def read_sources_of(cat) -> dict | None:
    from bagofdims.example_sources import read_sources

    if not hasattr(cat, "_sources"):
        cat._sources = read_sources(cat.cache.path)
    return cat._sources


def print_top_examples(cat, name: str, site: str, k: int) -> None:
    """The cached examples agreeing most with a feature: index, label, group, source file."""
    print("  top examples")
    for e in cat.top_examples(name, k=k, site=site):
        print(f"    #{e['index']:<5d} {e['score']:.2f}  label {e['label'] or '-'}  "
              f"group {e['group'] or '-'}  {example_source(cat, e['index'])}")
