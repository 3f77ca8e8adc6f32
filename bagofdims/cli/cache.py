"""``bagofdims capture`` / ``info`` / ``sites``: build a sign cache, describe one, list a model's sites.

    bagofdims capture --model smollm2 --sites 'resid.*' final     # -> runs/smollm2/cache
    bagofdims info runs/smollm2/cache
    bagofdims sites --model gemma3-270m -v
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import tyro

from bagofdims.cli.options import check_device, check_positive, flag, run_dir
from bagofdims.errors import AlreadyExists, CacheError, InvalidArgument
from bagofdims.parallel import is_main_process


@dataclass
class CacheConfig:
    """Build the sign cache of a model: one forward pass per vocabulary token, the sign of every
    dimension at every site, one bit each. An interrupted build resumes when rerun."""

    model: Annotated[str, flag(metavar="MODEL")] = "smollm2"
    """Embedded model (smollm2, gemma3-270m, minilm), Hugging Face id, or local model directory."""
    sites: Annotated[list[str], flag("resid.* final; resid.* for encoders")] = field(
        default_factory=list)
    """Site names or globs, e.g. resid.* final k.3 (list them with `bagofdims sites`)."""
    out: Annotated[Optional[str], flag("runs/MODEL/cache", "DIR")] = None
    """Cache directory to write."""
    bos: Annotated[tyro.conf.DisallowNone[Optional[bool]], flag("on for decoder LMs")] = None
    """Read each token after the document-start token (keeps it off the position-0 sink)."""
    bos_token: Annotated[Optional[str], flag("the model's own", "TOKEN")] = None
    """The start token to read each token after, as a token string."""
    tokens: Annotated[Optional[int], flag("the whole vocabulary", "N")] = None
    """Cache only the first N vocabulary ids."""
    subset: Annotated[Optional[str], flag("the whole vocabulary", "categories[:SET]")] = None
    """Cache only the single-token members of a category set (categories: the default set;
    categories:broad or categories:FILE.json) plus --background random tokens; recorded in the
    cache and every catalog of it (for large vocabularies)."""
    background: Annotated[Optional[int], flag("20000 with --subset", "N")] = None
    """Random vocabulary tokens a --subset cache adds (the catalog's random-token null draws
    from them)."""
    background_seed: Annotated[Optional[int], flag("0 with --subset", "SEED")] = None
    """Seed of the --subset background sample."""
    batch_size: Annotated[Optional[int], flag("512 tokens, 32 examples", "N")] = None
    """Tokens (or examples, with --inputs) per forward pass."""
    chunk_size: Annotated[Optional[int], flag("8192 tokens, 1024 examples", "N")] = None
    """Tokens (or examples) per checkpointed chunk: what a resume skips, and what several
    processes (`accelerate launch`) share out; rounded down to a multiple of --batch-size."""
    magnitudes: bool = False
    """Also store float16 |values| (lets `query --dim` rank tokens)."""
    dtype: Annotated[Optional[str], flag("the model's own", "bfloat16|float16")] = None
    """Run the forward passes under autocast in this dtype: bfloat16 is ~2x faster on CPU, but
    some signs differ from float32 (scripts/bench_capture.py measures how many); recorded."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""
    overwrite: bool = False
    """Replace an existing cache in --out (else it is reused only if its settings match)."""
    inputs: Annotated[Optional[str], flag("the vocabulary", "SRC")] = None
    """Cache examples instead of tokens: a folder SRC/<label>/<file> (.png .jpg .npy .wav .txt), a
    .jsonl/.csv/.parquet table, a datasets save_to_disk folder, or hf:NAME[:CONFIG][@SPLIT]."""
    labels: Annotated[Optional[str], flag("sub-folder names; a table's label column", "FILE|COLUMN")] = None
    """Example labels: a file with one per line, a column name, or none."""
    groups: Annotated[Optional[str], flag("none", "FILE|COLUMN")] = None
    """Example groups kept on one side of a catalog's split: a file (one per line) or a column."""
    pool: Annotated[str, flag(metavar="mean|cls|last|N|A:B")] = "mean"
    """How an example's positions become one vector (with --inputs): mean, first, last, position N
    or the mean over positions A..B-1."""
    column: Annotated[Optional[str], flag("text, image, audio, sentence, file or path", "COLUMN")] = None
    """Input column of a table or dataset (with --inputs)."""
    limit: Annotated[Optional[int], flag("all; 1000 for hf:", "N")] = None
    """Use only the first N examples (with --inputs)."""


def check_cache_config(cfg: CacheConfig) -> None:
    """The checks that need no model (raise InvalidArgument)."""
    if cfg.batch_size is not None:
        check_positive("--batch-size", cfg.batch_size)
    if cfg.chunk_size is not None:
        check_positive("--chunk-size", cfg.chunk_size)
    if cfg.inputs is None and any(v is not None for v in (cfg.labels, cfg.groups, cfg.column,
                                                           cfg.limit)) or \
            cfg.inputs is None and cfg.pool != "mean":
        raise InvalidArgument("--labels, --groups, --column, --limit and --pool go with --inputs "
                              "SRC; add it, or drop them for a vocabulary cache.")
    if cfg.dtype is not None:
        from bagofdims.signs.forward import autocast_name

        if cfg.inputs is not None:
            raise InvalidArgument("--dtype applies to vocabulary caches; drop it with --inputs.")
        autocast_name(cfg.dtype)
    if cfg.tokens is not None and cfg.tokens < 1:
        raise InvalidArgument(f"--tokens must be at least 1, got {cfg.tokens}; leave it out "
                              "to cache the whole vocabulary.")
    check_subset_config(cfg)
    if cfg.bos is False and cfg.bos_token is not None:
        raise InvalidArgument("--no-bos contradicts --bos-token; drop one of them.")
    check_device(cfg.device)


def check_subset_config(cfg: CacheConfig) -> None:
    """--subset / --background / --background-seed: the checks that need no model."""
    if cfg.subset is None:
        if cfg.background is not None or cfg.background_seed is not None:
            raise InvalidArgument("--background and --background-seed go with --subset "
                                  "categories[:SET]; add it, or drop them.")
        return
    rule, _, name = cfg.subset.partition(":")
    if rule != "categories" or (_ and not name):
        raise InvalidArgument(f"--subset {cfg.subset!r}: use categories (the default category "
                              "set), categories:broad or categories:FILE.json.")
    if cfg.tokens is not None or cfg.inputs is not None:
        raise InvalidArgument("--subset contradicts --tokens / --inputs; drop one of them.")
    if cfg.background is not None and cfg.background < 0:
        raise InvalidArgument(f"--background must be >= 0 random tokens, got {cfg.background}.")


def subset_spec(cfg: CacheConfig, tok, n_vocab: int):
    """The tokens of a --subset cache (None without --subset)."""
    from bagofdims.signs.subset import subset_tokens

    if cfg.subset is None:
        return None
    name = cfg.subset.partition(":")[2] or "default"
    background = 20_000 if cfg.background is None else cfg.background
    if background > n_vocab:
        raise InvalidArgument(f"--background {background:,} is more than the {n_vocab:,}-token "
                              f"vocabulary of {cfg.model}; lower it, or drop --subset for the "
                              "full cache.")
    return subset_tokens(tok, name, background, cfg.background_seed or 0, vocab_size=n_vocab)


def vocab_size(model, tok) -> int:
    """Ids a cache can hold: the tokenizer's, capped by the embedding's rows."""
    return min(len(tok), model.get_input_embeddings().weight.shape[0])


def build_cache(cfg: CacheConfig, model=None, tok=None):
    """Build, save and return the sign cache of ``cfg`` (or the one already in ``cfg.out``, if it
    was made with the same model, tokenizer and settings). ``model``/``tok`` may be passed in.
    Under several processes only the main one saves and returns it; the others return None."""
    import torch

    from bagofdims.models import load_model
    from bagofdims.parallel import world
    from bagofdims.signs.cache import SignCache
    from bagofdims.sites import default_sites

    check_cache_config(cfg)
    if cfg.inputs is not None:
        from bagofdims.cli.inputs import build_example_cache

        return build_example_cache(cfg, model, tok)
    out = Path(cfg.out or run_dir(cfg.model, "cache"))
    exists = out.exists()
    if exists and not cfg.overwrite and not (out / "meta.json").exists():
        raise AlreadyExists(f"{out} exists and is not a sign cache; choose another --out, or pass "
                            "--overwrite to replace it.")
    here = world()  # several processes under `accelerate launch`: each builds a share
    if model is None:
        model, tok = load_model(cfg.model, device=here.rank_device(check_device(cfg.device)))
    n_vocab = vocab_size(model, tok)
    if cfg.tokens is not None and cfg.tokens > n_vocab:
        raise InvalidArgument(f"--tokens {cfg.tokens} is larger than the vocabulary of "
                              f"{cfg.model} ({n_vocab:,} tokens); pass at most {n_vocab}, or leave "
                              "it out for all.")
    sites = cfg.sites or default_sites(model)
    spec = subset_spec(cfg, tok, n_vocab)
    if exists and not cfg.overwrite:
        return reuse_cache(out, cfg, model, tok, sites, spec)
    tokens = spec.token_ids if spec else None if cfg.tokens is None else torch.arange(cfg.tokens)
    cache = SignCache.build(model, tok, sites=sites, bos=cfg.bos, bos_token=cfg.bos_token,
                            tokens=tokens, batch_size=cfg.batch_size or 512, magnitudes=cfg.magnitudes,
                            dtype=cfg.dtype, checkpoint=out.with_name(out.name + ".partial"),
                            progress=here.is_main,
                            **({"chunk_size": cfg.chunk_size} if cfg.chunk_size else {}))
    if cache is None:  # the main process assembles and saves it
        return None
    if spec:
        from bagofdims.signs.subset import attach

        attach(cache, spec)
    cache.save(out, overwrite=cfg.overwrite)
    return cache


def reuse_cache(out: Path, cfg: CacheConfig, model, tok, sites, spec=None):
    """The cache in ``out`` if it matches the model, tokenizer and settings; else a clear error."""
    import torch

    from bagofdims.inputs import resolve_prefix
    from bagofdims.signs.cache import SignCache
    from bagofdims.signs.forward import autocast_name
    from bagofdims.sites import describe, resolve

    redo = "Pass --overwrite to rebuild it, or choose another --out."
    try:
        cache = SignCache.load(out, model=model, tokenizer=tok)
    except CacheError as err:
        try:
            other = SignCache.load(out).model_name
        except CacheError:
            raise CacheError(f"{out} holds a damaged sign cache: {err} {redo}") from err
        raise AlreadyExists(f"{out} already holds a sign cache of another model or tokenizer "
                            f"({other}, not {cfg.model}). {redo}") from err
    meta = cache.meta
    wanted = [s.name for s in resolve(model, sites)]
    bos_id, _ = resolve_prefix(model, tok, cfg.bos, cfg.bos_token)
    diffs = []
    if cache.sites != wanted:
        diffs.append(f"sites {describe(cache.sites)} (asked: {describe(wanted)})")
    if meta.bos_id != bos_id:
        asked = tok.convert_ids_to_tokens(bos_id) if bos_id is not None else "none"
        diffs.append(f"start token {meta.bos_token if meta.bos else 'none'} (asked: {asked})")
    n = cfg.tokens or vocab_size(model, tok)
    same_tokens = (meta.subset == spec.record() if spec else meta.full_vocab if cfg.tokens is None
                   else not meta.full_vocab and torch.equal(cache.token_ids, torch.arange(n)))
    if not same_tokens:
        have = "the whole vocabulary" if meta.full_vocab else \
            f"{meta.n_tokens:,} {'subset' if meta.subset else 'chosen'} tokens"
        asked = (f"the subset {cfg.subset} + {len(spec.background_ids):,} background tokens "
                 f"(seed {spec.seed})" if spec else "the whole vocabulary" if cfg.tokens is None
                 else f"the first {n:,} ids")
        diffs.append(f"tokens: {have} (asked: {asked})")
    if meta.magnitudes != cfg.magnitudes:
        diffs.append(f"magnitudes {'stored' if meta.magnitudes else 'not stored'} "
                     f"(asked: {'--magnitudes' if cfg.magnitudes else '--no-magnitudes'})")
    asked_dtype = autocast_name(cfg.dtype)
    if meta.autocast != asked_dtype:
        asked_dtype = asked_dtype or "the model's own"
        diffs.append(f"forward dtype {meta.autocast or meta.dtype} (asked: {asked_dtype})")
    if diffs:
        raise AlreadyExists(f"{out} already holds a sign cache with other settings: "
                            f"{'; '.join(diffs)}. {redo}")
    if is_main_process():
        print(f"{out} already holds this cache (same model, tokenizer and settings); reusing it.")
    return cache


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def summary(cache) -> str:
    """A short human-readable description of a sign cache."""
    from bagofdims.signs.subset import SUBSET_NOTE, describe as describe_subset
    from bagofdims.sites import describe

    if cache.is_examples:
        from bagofdims.cli.inputs import example_summary

        return example_summary(cache)
    meta = cache.meta
    disk = sum(f.stat().st_size for f in cache.path.iterdir() if f.is_file()) if cache.path else 0
    dense = len(cache) * sum(meta.sites.values()) * 4
    start = (f"each after {meta.bos_token or meta.bos_id} (id {meta.bos_id})" if meta.bos
             else "each read alone")
    lines = [
        f"sign cache of {meta.model} at {cache.path}",
        f"  tokens      {len(cache):,} of a {meta.vocab_size:,}-token vocabulary, {start}",
        f"  sites       {len(meta.sites)}: {describe(meta.sites)}",
        *([f"  subset      {describe_subset(meta.subset)}",
           f"              {SUBSET_NOTE}"] if meta.subset else []),
        f"  widths      {sorted(set(meta.sites.values()))}",
        f"  on disk     {_size(disk)} (float32 states would take {_size(dense)}: "
        f"1/{dense / max(disk, 1):.0f})",
        f"  weights     {meta.weights}  tokenizer {meta.tokenizer}  created {meta.created}",
    ]
    seconds = meta.build_seconds
    if seconds is not None and seconds >= 0.1:
        lines.append(f"  built in    {seconds} s ({len(cache) / seconds:,.0f} tokens/s)")
    if meta.autocast:
        lines.append(f"  forward     under {meta.autocast} autocast (model in {meta.dtype})")
    if meta.batch_size_used is not None:
        halved = (f", halved to {meta.batch_size_used} on out-of-memory"
                  if meta.batch_size_used < meta.batch_size else "")
        peak = (f"; peak memory {_size(meta.peak_memory)} ({meta.peak_memory_measure})"
                if meta.peak_memory is not None else "")
        lines.append(f"  batches     {meta.batch_size} tokens{halved}{peak}")
    return "\n".join(lines)


def capture(cfg: CacheConfig) -> None:
    """``bagofdims capture``."""
    cache = build_cache(cfg)
    if cache is not None and is_main_process():
        print(summary(cache))


@dataclass
class InfoConfig:
    """Describe a sign cache on disk."""

    path: Annotated[tyro.conf.Positional[str], flag(metavar="PATH")]
    """Sign cache directory."""


def info(cfg: InfoConfig) -> None:
    """``bagofdims info``."""
    from bagofdims.signs.cache import SignCache

    print(summary(SignCache.load(cfg.path)))


@dataclass
class SitesConfig:
    """List the sites of a model (what --sites accepts)."""

    model: Annotated[str, flag(metavar="MODEL")] = "smollm2"
    """Embedded model (smollm2, gemma3-270m, minilm), Hugging Face id, or local model directory."""
    verbose: Annotated[bool, flag(aliases=("-v",))] = False
    """Also show each site's module path and whether it reads the module's input or output."""


def list_sites(cfg: SitesConfig) -> dict:
    """``{name: Site}`` of the model (loaded on the CPU)."""
    from bagofdims.models import load_model
    from bagofdims.sites import all_sites

    model, _ = load_model(cfg.model, device="cpu")
    return all_sites(model)


def sites(cfg: SitesConfig) -> None:
    """``bagofdims sites``."""
    from bagofdims.sites import describe

    found = list_sites(cfg)
    print(f"{cfg.model}: {describe(found)}")
    if cfg.verbose:
        for s in found.values():
            print(f"  {s.name:14s} {s.on:6s} {s.module_path}")
