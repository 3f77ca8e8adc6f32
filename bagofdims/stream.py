"""Stream hidden states of a text dataset to sharded safetensors on disk, with resume.

>>> write_activations(model, tok, texts, ["resid.10", "k.3"], "runs/acts")
>>> store = ActivationStore("runs/acts"); store.load("resid.10")   # [n_tokens, d] float16

On disk a store is one directory (format ``bagofdims.activations/2``):

``index.json``
    ``format``; ``settings``, everything that changes the output: ``model`` (name), ``weights``
    (:func:`~bagofdims.models.weight_fingerprint`), ``tokenizer`` (fingerprint),
    ``start_token`` (the id the tokenizer puts before a text, or null), ``padding_side``,
    ``truncation_side``, ``sites`` (resolved names, forward order), ``dtype``, ``max_length``,
    ``batch_size``, ``shard_tokens``, ``n_docs`` and ``texts_sha256`` (sha256 over the texts, each
    as an 8-byte little-endian length then its UTF-8 bytes); ``widths`` (site -> width);
    ``shards``, one entry per finished shard in order, ``{file, docs: [first, end), tokens, bytes,
    sha256}``; ``complete``, true only once the shard holding the last text is listed.
``shard-00000.safetensors``, ...
    the non-padding tokens of a run of texts: ``[tokens, width]`` per site (``dtype``), plus
    int64 ``doc`` (text index), ``pos`` (position in the text) and ``token_id``. Texts are
    batched with padding and given ``position_ids`` from the attention mask, so each is read at
    the positions it has alone.

Shard names are plain file names inside the store; readers refuse anything else. A shard is written
under a temporary name and renamed, then ``index.json`` is replaced atomically, so after a kill at
any point the index lists only whole shards. The shards' texts are planned from token counts
before the model runs (:mod:`bagofdims.stream_shards`); a rerun with the same texts and settings
writes only the shards not there yet, byte-identical to an uninterrupted run; other settings raise
:class:`ResumeError`. One job writes a store at a time (an advisory lock on ``.lock``); under
``accelerate launch`` its processes share the shards out and the main process lists them, so the
store is byte-identical to one process's (:mod:`bagofdims.parallel`). :class:`ActivationStore`
refuses an unfinished store unless ``allow_partial=True``, checks each shard's size on open and its
sha256 on first read (``verify=True``); it is read-only and safe to share across threads.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from bagofdims import parallel
from bagofdims.capture import Capture, no_cache_kwargs
from bagofdims.devices import input_device
from bagofdims.errors import (AlreadyExists, InvalidArgument, MissingFile, NotFound, NumericalError,
                              OutOfRange, ResumeError, StoreError)
from bagofdims.inputs import prepended
from bagofdims.models import model_name, tokenizer_fingerprint, weight_fingerprint
from bagofdims.sites import resolve
from bagofdims.storage import exclusive, open_mmap, sha256, write_json
from bagofdims.stream_index import (DTYPES, FORMAT, INDEX, KEYS, SHARD, check_positive,
                                    check_shard_file, check_texts, is_count, parse_index,
                                    read_bytes, texts_sha256)
from bagofdims.stream_shards import PART, fold, plan_shards, settle, shard_name, write_part

log = logging.getLogger(__name__)

LOCK = ".lock"
_TEMP = re.compile(r"\.(shard-\d{5,}\.safetensors|index\.json|\.part-\d{5,}\.json)\.tmp-\d+")
# How a differing setting is named in a ResumeError.
_WHAT = {"texts_sha256": "the texts differ", "n_docs": "the number of texts differs",
         "weights": "the model's weights differ", "tokenizer": "the tokenizer differs"}


def write_activations(
    model,
    tokenizer,
    texts,
    sites,
    out,
    batch_size: int = 8,
    max_length: int = 256,
    shard_tokens: int = 32768,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Capture ``sites`` over ``texts`` into the store ``out`` (see the module docstring).

    Args:
        texts: a list of non-empty str (a sequence; a generator cannot be resumed).
        sites: site names or globs (:mod:`bagofdims.sites`).
        batch_size, max_length: texts per forward pass; tokens kept per text (truncation).
        shard_tokens: a shard is closed at the first batch end past this many tokens.
        dtype: torch.float16 or torch.float32, the stored precision.
        overwrite: replace a store written with other settings instead of refusing.

    A store interrupted at any point resumes when the settings and texts match; a complete one
    is left as it is. Returns ``out``.
    """
    texts = check_texts(texts)
    for name, value in (("batch_size", batch_size), ("max_length", max_length),
                        ("shard_tokens", shard_tokens)):
        check_positive(name, value)
    dtype_name = next((k for k, (t, _) in DTYPES.items() if t == dtype), None)
    if dtype_name is None:
        raise InvalidArgument(f"dtype {dtype} cannot be stored; pass torch.float16 or "
                              "torch.float32.")
    if getattr(tokenizer, "pad_token", None) is None:
        raise InvalidArgument("The tokenizer has no pad token, needed to batch texts; set "
                              "tokenizer.pad_token = tokenizer.eos_token (load_tokenizer does).")
    settings = {
        "model": model_name(model),
        "weights": weight_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "start_token": prepended(tokenizer),
        "padding_side": getattr(tokenizer, "padding_side", "right"),
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
        "sites": [s.name for s in resolve(model, sites)],
        "dtype": dtype_name,
        "max_length": max_length,
        "batch_size": batch_size,
        "shard_tokens": shard_tokens,
        "n_docs": len(texts),
        "texts_sha256": texts_sha256(texts),
    }
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlreadyExists(f"{out} is a file; write activations to a directory.")
    here = parallel.world()
    with ExitStack() as held:
        def begin():  # the main process alone: lock, check or start the index, plan the shards
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(_write_lock(out))
            index = _start(out, settings, overwrite)
            if index["complete"]:
                return index, [], []
            plan = plan_shards(tokenizer, texts, batch_size, max_length, shard_tokens)
            todo, listed = settle(out, index, plan)
            if listed:
                _write_index(out, index, listed)
            return index, plan, todo

        index, plan, todo = here.on_main(f"opening {out}", begin)
        if index["complete"] and not todo:
            log.info("%s is already complete", out)
            return out
        with here.together(f"writing {out}"):
            _capture(model, tokenizer, texts, out, index, plan, here.share(todo),
                     DTYPES[dtype_name][0], progress and here.is_main, sole=here.size == 1)
        if here.size > 1:  # the main process lists what every process wrote
            here.on_main(f"listing the shards of {out}",
                         lambda: _write_index(out, index, fold(out, index, plan)))
    return out


def _write_lock(out: Path):
    """An exclusive advisory lock on the store (released by the OS if the process dies)."""
    return exclusive(out / LOCK, lambda: StoreError(
        f"{out} is being written by another process; wait for it to finish or write to another "
        "directory."))


def _start(out: Path, settings: dict, overwrite: bool) -> dict:
    """The index to continue from: the existing one when its settings match, else a new one."""
    path = out / INDEX
    for p in out.iterdir():  # temp files of a killed writer (we hold the lock)
        if _TEMP.fullmatch(p.name):
            p.unlink()
    if path.exists() and not overwrite:
        index = parse_index(read_bytes(path), out)
        for key, new in settings.items():
            old = index["settings"].get(key)
            if old != new:
                raise ResumeError(
                    f"{out} holds activations written with other settings ({_WHAT.get(key, key)}: "
                    f"{key} was {old!r}, now {new!r}); write to another directory or pass "
                    "overwrite=True (CLI: --overwrite) to replace it.")
        for shard in index["shards"]:
            check_shard_file(out, shard)
        if index["shards"] and not index["complete"]:
            log.info("resuming %s after %d shards (%d of %d texts)", out, len(index["shards"]),
                     index["shards"][-1]["docs"][1], settings["n_docs"])
        return index
    if not path.exists() and not overwrite:
        foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if foreign:
            raise AlreadyExists(f"{out} holds other files ({', '.join(foreign[:3])}) and no "
                                f"{INDEX}; write to a new or empty directory, or pass "
                                "overwrite=True (CLI: --overwrite).")
    index = {"format": FORMAT, "settings": settings, "widths": {}, "shards": [], "complete": False}
    write_json(path, index)  # first, so the old shards are unlisted before they go
    for p in out.iterdir():
        if SHARD.fullmatch(p.name) or PART.fullmatch(p.name):
            p.unlink()
    return index


def _capture(model, tokenizer, texts, out: Path, index: dict, plan: list, shards: list[int],
             dtype, progress: bool, sole: bool) -> None:
    """Write ``shards`` (indices into ``plan``); ``sole``: the only process, which lists each
    shard in the index as it goes (else each gets a part file for the main process)."""
    s = index["settings"]
    n_docs, batch_size = s["n_docs"], s["batch_size"]
    docs = sum(plan[i][1] - plan[i][0] for i in shards)
    device = input_device(model)
    extra = no_cache_kwargs(model)  # nothing is generated: no KV cache
    # Positions from the attention mask, so a left-padded text is read at the positions it has
    # alone (models with absolute position embeddings, e.g. GPT-2, differ otherwise).
    positions = "position_ids" in inspect.signature(model.forward).parameters
    # several processes: the main one's bar shows its own share
    bar = tqdm(total=n_docs if sole else docs, initial=n_docs - docs if sole else 0,
               desc="activations", unit="doc", disable=not progress)
    with torch.inference_mode(), Capture(model, s["sites"], stop=True, dtype=dtype) as cap:
        for i in shards:
            first, last, planned = plan[i]
            buf: dict[str, list] = {}
            buffered = 0
            for start in range(first, last, batch_size):
                end = min(start + batch_size, last)
                enc = tokenizer(texts[start:end], return_tensors="pt", padding=True,
                                truncation=True, max_length=s["max_length"]).to(device)
                if enc["input_ids"].shape[1] == 0:
                    raise InvalidArgument(f"texts[{start}:{end}] give no tokens with this "
                                          "tokenizer; drop texts that are only whitespace.")
                mask = enc["attention_mask"].bool()
                pos = mask.long().cumsum(1) - 1
                cap.run(**enc, **extra,
                        **({"position_ids": pos.clamp(min=0)} if positions else {}))
                for name in s["sites"]:
                    values = cap[name][mask]
                    if values.dim() != 2:
                        raise InvalidArgument(f"Site {name} gives per-token values of shape "
                                              f"{tuple(values.shape[1:])}, not vectors; stream "
                                              "other sites.")
                    if not bool(torch.isfinite(values).all()):
                        hint = ", beyond float16's range: pass dtype=torch.float32" \
                            if dtype == torch.float16 else ""
                        raise NumericalError(f"{name} has NaN or infinite values in "
                                             f"texts[{start}:{end}]{hint}.")
                    buf.setdefault(name, []).append(values.cpu().numpy())
                    index["widths"][name] = int(values.shape[1])
                doc_ids = torch.arange(start, end, device=device)[:, None].expand_as(mask)
                buf.setdefault("doc", []).append(doc_ids[mask].cpu().numpy())
                buf.setdefault("pos", []).append(pos[mask].cpu().numpy())
                buf.setdefault("token_id", []).append(
                    enc["input_ids"][mask].long().cpu().numpy())
                buffered += int(mask.sum())
                bar.update(end - start)
            if buffered != planned:
                raise StoreError(f"texts[{first}:{last}] gave {buffered} tokens in batches but "
                                 f"{planned} counted one by one; this tokenizer pads or truncates "
                                 "differently in batches, which a store cannot shard reliably.")
            _flush(out, index, buf, i, (first, last), buffered, plan if sole else None)
    bar.close()


def _flush(out: Path, index: dict, buf: dict, i: int, docs: tuple[int, int], n_tokens: int,
           plan: list | None) -> None:
    """Write shard ``i``; list it (``plan``: the sole writer) or leave its part file (else)."""
    name = shard_name(i)
    data = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in buf.items()}
    tmp = out / f".{name}.tmp-{os.getpid()}"
    save_file(data, str(tmp))
    entry = {"file": name, "docs": list(docs), "tokens": n_tokens, "bytes": tmp.stat().st_size,
             "sha256": sha256(tmp)}
    os.replace(tmp, out / name)
    if plan is None:
        write_part(out, i, entry, index["widths"])
        return
    index["shards"].append(entry)
    _write_index(out, index, fold(out, index, plan))  # with parts an earlier run left after it


def _write_index(out: Path, index: dict, listed: list[Path]) -> None:
    write_json(out / INDEX, index)  # a shard counts only once listed here
    for p in listed:  # parts the index now lists
        p.unlink(missing_ok=True)


class ActivationStore:
    """Read activations written by :func:`write_activations` (memory-mapped shards).

    Args:
        path: the store directory.
        verify: check each shard's sha256 the first time it is read (sizes are always checked).
        allow_partial: read the finished shards of an interrupted store instead of refusing it.

    Read-only and safe to share across threads: each read maps the shard afresh.
    """

    def __init__(self, path, *, verify: bool = True, allow_partial: bool = False):
        self.path = Path(path)
        if not (self.path / INDEX).is_file():
            raise MissingFile(
                f"{self.path} has no {INDEX}: write activations there with write_activations()."
            )
        self.index = parse_index(read_bytes(self.path / INDEX), self.path)
        self.verify = verify
        if not self.index["complete"] and not allow_partial:
            raise StoreError(
                f"{self.path} is incomplete ({self.n_docs} of {self.index['settings']['n_docs']} "
                "texts): it was interrupted; rerun write_activations with the same texts to "
                "resume, or pass allow_partial=True to read the finished part.")
        self._files = [check_shard_file(self.path, shard) for shard in self.index["shards"]]
        self._locks = [threading.Lock() for _ in self._files]
        self._verified = [False] * len(self._files)

    @property
    def sites(self) -> list[str]:
        return list(self.index["settings"]["sites"])

    @property
    def widths(self) -> dict[str, int]:
        return dict(self.index["widths"])

    @property
    def complete(self) -> bool:
        return self.index["complete"]

    @property
    def n_docs(self) -> int:
        """Texts covered by the finished shards (all of them when complete)."""
        return self.index["shards"][-1]["docs"][1] if self.index["shards"] else 0

    @property
    def n_tokens(self) -> int:
        return sum(s["tokens"] for s in self.index["shards"])

    @property
    def n_shards(self) -> int:
        return len(self._files)

    def shard(self, i: int) -> dict[str, np.ndarray]:
        """Shard ``i`` as ``name -> array`` (memory-mapped), after checking it."""
        if not is_count(i) or i >= self.n_shards:
            raise OutOfRange(f"shard {i!r} does not exist; this store has {self.n_shards} shards.")
        info, path = self.index["shards"][i], self._files[i]
        if self.verify and not self._verified[i]:
            with self._locks[i]:  # hash once, whichever thread reads the shard first
                if not self._verified[i]:
                    if sha256(path) != info["sha256"]:
                        raise StoreError(f"{self.path}: shard {info['file']} does not match its "
                                         "sha256 in the index (corrupt or from another store); "
                                         "rewrite the store with write_activations(..., "
                                         "overwrite=True; CLI: --overwrite).")
                    self._verified[i] = True
        try:
            arrays = open_mmap(path)
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise StoreError(f"{self.path}: shard {info['file']} is unreadable ({err}); rewrite "
                             "the store with write_activations(..., overwrite=True; CLI: --overwrite).") from err
        self._check_arrays(info, arrays)
        return arrays

    def _check_arrays(self, info: dict, arrays: dict) -> None:
        n, np_dtype = info["tokens"], DTYPES[self.index["settings"]["dtype"]][1]
        expected = {name: (np_dtype, (n, w)) for name, w in self.index["widths"].items()}
        expected.update({k: (np.int64, (n,)) for k in KEYS})
        got = {k: (a.dtype, a.shape) for k, a in arrays.items()}
        if set(got) != set(expected) or any(got[k][0] != np.dtype(d) or got[k][1] != shape
                                            for k, (d, shape) in expected.items()):
            raise StoreError(f"{self.path}: shard {info['file']} holds {got}, the index expects "
                             f"{expected}; rewrite the store with write_activations(..., "
                             "overwrite=True; CLI: --overwrite).")

    def check(self) -> None:
        """Read and check every shard now (sha256 when ``verify``, header, dtypes, shapes)."""
        for i in range(self.n_shards):
            self.shard(i)

    def shards(self):
        """Yield each shard as a dict of memory-mapped arrays."""
        for i in range(self.n_shards):
            yield self.shard(i)

    def load(self, key: str) -> torch.Tensor:
        """One site (or ``doc``/``pos``/``token_id``) over every token, concatenated."""
        if key not in self.index["settings"]["sites"] and key not in KEYS:
            raise NotFound(f"'{key}' is not stored here; sites: {self.sites}.")
        parts = [s[key] for s in self.shards()]
        if not parts:  # a partial store with no finished shard
            if key in KEYS:
                return torch.zeros(0, dtype=torch.int64)
            dtype = DTYPES[self.index["settings"]["dtype"]][0]
            return torch.zeros((0, self.index["widths"].get(key, 0)), dtype=dtype)
        return torch.from_numpy(np.concatenate(parts))
