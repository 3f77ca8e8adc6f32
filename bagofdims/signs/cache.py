"""SignCache: the sign of every dimension at every site, for every vocabulary token.

One forward pass per token, after the model's document-start token for decoder LMs (see
:mod:`bagofdims.inputs`) or alone, batched, all sites in one pass, signs packed one bit per
dimension (see :mod:`bagofdims.signs.bits` for the bit order).

On disk a cache is a directory (DESIGN.md), written atomically (temp dir, then rename):

- ``meta.json``: format version, model name, weight and tokenizer fingerprints, vocabulary size,
  sites with their widths, input policy (``bos``, ``bos_id``, ``bos_token``, ``bos_rule``),
  dtype, creation time, bit order, and the sha256 of each data file (checked on load);
- ``signs.safetensors``: ``uint8 [n_tokens, ceil(width/8)]`` per site, plus ``_token_ids``
  (``int64 [n_tokens]``: the vocabulary id of each row);
- ``magnitudes.safetensors`` (optional): ``float16 [n_tokens, width]`` per site.

Loading memory-maps the tensors: nothing is read until used. A build given a ``checkpoint``
directory saves each finished chunk there and, when rerun after an interruption, skips what is done;
the result is byte-identical to an uninterrupted build.

:meth:`SignCache.build_inputs` caches examples (images, clips, texts) instead, one pooled vector
each, in the same format (:mod:`bagofdims.signs.examples`; ``meta.inputs == "examples"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from bagofdims.checks import as_indices, positive_int
from bagofdims.devices import input_device
from bagofdims.signs import bits
from bagofdims.inputs import resolve_prefix
from bagofdims.models import fingerprint_info, model_name, tokenizer_fingerprint, weight_fingerprint
from bagofdims.storage import atomic_dir, open_mmap, recover, sha256
from bagofdims.sites import describe, resolve
from bagofdims.signs.checkpoint import Checkpoint, Chunk, now, run_chunks
from bagofdims.signs.meta import CacheMeta
from bagofdims.signs.examples import build_inputs as _build_inputs
from bagofdims.signs.forward import TokenForward, autocast_name
from bagofdims.errors import (CacheError, InvalidArgument, NotFound, OutOfRange, ResumeError,
                              SafetensorsError)

TOKEN_IDS = "_token_ids"

def _vocab_size(model, tok) -> int:
    rows = model.get_input_embeddings().weight.shape[0]
    return min(len(tok), rows)


class SignCache:
    """Packed signs (and optional magnitudes) of every site for a set of vocabulary tokens."""

    def __init__(self, meta: CacheMeta, signs: dict, magnitudes: dict | None = None, path=None):
        self.meta = meta
        self._signs = signs  # site -> np.ndarray uint8 [n, B] (possibly memory-mapped)
        self._mags = magnitudes or {}
        self.path = Path(path) if path is not None else None
        ids = np.asarray(signs[TOKEN_IDS])
        self.token_ids = torch.from_numpy(np.array(ids, dtype=np.int64))
        self._row_of = None

    # -- properties -----------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.meta.sites)

    @property
    def model_name(self) -> str:
        return self.meta.model

    def width(self, site: str) -> int:
        return int(self.meta.sites[self._site(site)])

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        rows = f"examples={len(self)}, pool={self.meta.pool!r}" if self.is_examples else \
            f"tokens={len(self)}"
        return (
            f"SignCache(model={self.model_name!r}, {rows}, sites={len(self.sites)}, "
            f"bos={self.meta.bos}, magnitudes={bool(self._mags)})"
        )

    def _site(self, site: str) -> str:
        if site not in self.meta.sites:
            raise NotFound(
                f"Site '{site}' is not in this cache; it has {describe(self.meta.sites)}. "
                "Rebuild with that site to use it."
            )
        return site

    # -- access ---------------------------------------------------------------------------------
    def rows(self, tokens) -> torch.Tensor:
        """Row indices of vocabulary token ids (errors name ids the cache lacks)."""
        tokens = as_indices(tokens, "token ids")
        n_vocab = self.meta.vocab_size
        if self.meta.full_vocab:
            bad = tokens[(tokens < 0) | (tokens >= n_vocab)]
            if len(bad):
                raise OutOfRange(f"Token ids {bad[:5].tolist()} are outside the vocabulary 0..{n_vocab - 1}.")
            return tokens
        if self._row_of is None:
            # built whole, then published: another thread never sees a half-filled map
            row_of = torch.full((n_vocab,), -1, dtype=torch.int64)
            row_of[self.token_ids] = torch.arange(len(self.token_ids))
            self._row_of = row_of
        safe = tokens.clamp(0, n_vocab - 1)
        rows = torch.where((tokens >= 0) & (tokens < n_vocab), self._row_of[safe], -1)
        if (rows < 0).any():
            raise OutOfRange(
                f"Token ids {tokens[rows < 0][:5].tolist()} are not in this cache (built over "
                f"{len(self)} tokens); rebuild it over the full vocabulary or those tokens."
            )
        return rows

    def packed(self, site: str, tokens=None, device=None) -> torch.Tensor:
        """``uint8 [n, ceil(width/8)]`` packed signs of a site (all cached tokens by default)."""
        arr = self._signs[self._site(site)]
        out = torch.from_numpy(np.asarray(arr)) if tokens is None else torch.from_numpy(
            np.asarray(arr[self.rows(tokens).numpy()])
        )
        return out if device is None else out.to(device)

    def signs(self, site: str, tokens=None, device=None, dtype=torch.int8) -> torch.Tensor:
        """±1 signs ``[n, width]`` of a site, unpacked on ``device`` (packed bits travel)."""
        return bits.unpack_signs(self.packed(site, tokens, device), self.width(site), dtype)

    def magnitudes(self, site: str, tokens=None, device=None) -> torch.Tensor:
        """``float16 [n, width]`` absolute values (only if built with ``magnitudes=True``)."""
        if site not in self._mags:
            raise NotFound("This cache has no magnitudes; build it with magnitudes=True.")
        arr = self._mags[site]
        out = torch.from_numpy(np.asarray(arr if tokens is None else arr[self.rows(tokens).numpy()]))
        return out if device is None else out.to(device)

    # -- model checks ---------------------------------------------------------------------------
    def check(self, model=None, tokenizer=None) -> None:
        """Raise :class:`CacheError` unless the model / tokenizer are the ones that built it."""
        if model is not None and weight_fingerprint(model) != self.meta.weights:
            raise CacheError(
                f"This cache was built from model '{self.model_name}' (weights "
                f"{self.meta.weights}), not from the model given ({model_name(model)}, weights "
                f"{weight_fingerprint(model)}). Load that model, or rebuild the cache with this one."
            )
        if tokenizer is not None and tokenizer_fingerprint(tokenizer) != self.meta.tokenizer:
            raise CacheError(
                f"This cache was built with another tokenizer than the one given (model "
                f"'{self.model_name}'). Use that model's tokenizer, or rebuild the cache."
            )

    # -- build ----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model,
        tokenizer,
        sites=("resid.*", "final"),
        bos: bool | None = None,
        tokens=None,
        bos_token: int | str | None = None,
        batch_size: int = 512,
        magnitudes: bool = False,
        checkpoint: str | os.PathLike | None = None,
        chunk_size: int = 8192,
        progress: bool = True,
        dtype=None,
    ) -> "SignCache":
        """One forward pass per token (``[BOS,] token``), signs of every site packed.

        ``tokens``: vocabulary ids to cache (default: the whole vocabulary). ``bos``: put the
        model's document-start token before each token (default ``None``: for decoder LMs, so
        no token sits at the position-0 attention sink; see :mod:`bagofdims.inputs`);
        ``bos_token`` (id or token string) picks another one. ``checkpoint``: a directory where
        finished chunks are kept, so an interrupted build resumes there. ``dtype``:
        ``"bfloat16"`` (or ``"float16"``) runs the forward passes under autocast, faster but with
        some signs differing from the model's own dtype (default ``None``). On out-of-memory the
        batch halves and the build goes on (see :mod:`bagofdims.signs.forward`).
        """
        resolved = resolve(model, sites)
        n_vocab = _vocab_size(model, tokenizer)
        bos_id, bos_rule = resolve_prefix(model, tokenizer, bos, bos_token)
        full = tokens is None
        ids = torch.arange(n_vocab) if full else as_indices(tokens, "tokens")
        if len(ids) == 0:
            raise InvalidArgument("tokens is empty: pass at least one vocabulary id (or None for all).")
        if not full and ((ids < 0) | (ids >= n_vocab)).any():
            raise OutOfRange(f"tokens must be vocabulary ids in 0..{n_vocab - 1}.")
        positive_int(batch_size, "batch_size")
        positive_int(chunk_size, "chunk_size")
        if chunk_size % batch_size:
            chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
        device = input_device(model)
        settings = dict(
            model=model_name(model), weights=weight_fingerprint(model),
            tokenizer=tokenizer_fingerprint(tokenizer), vocab_size=n_vocab, full_vocab=full,
            n_tokens=len(ids), bos=bos_id is not None, bos_id=bos_id,
            bos_token=tokenizer.convert_ids_to_tokens(bos_id) if bos_id is not None else None,
            bos_rule=bos_rule, dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
            autocast=autocast_name(dtype), magnitudes=magnitudes, batch_size=batch_size,
            chunk_size=chunk_size,
            tokens_sha256=hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16],
            weights_hashed=fingerprint_info(model))
        forward = TokenForward(model, [s.name for s in resolved], bos_id, batch_size, device, dtype)
        t0 = time.perf_counter()
        key = dict(settings, sites=[site.name for site in resolved])
        ckpt = Checkpoint(checkpoint, key) if checkpoint is not None else None
        parts: list[Chunk] = []
        chunks = list(range(0, len(ids), chunk_size))
        bar = tqdm(total=len(ids), desc=f"sign cache {settings['model']}", unit="tok",
                   disable=not progress, smoothing=0.1)

        def chunk(ci: int) -> Chunk:
            start = chunks[ci]
            return _run_chunk(forward, ids[start:start + chunk_size], magnitudes, bar)

        # Under several processes (bagofdims.parallel) each computes its share of the chunks into
        # the checkpoint and the main process assembles them all; the others return None.
        try:
            records: list[dict] = []  # each process's batch size and peak memory
            parts = run_chunks(ckpt, [len(ids[s:s + chunk_size]) for s in chunks], chunk, bar,
                               report=forward.record, reports=records)
        finally:
            bar.close()  # before any error message
        if parts is None:
            return None
        signs = {s.name: np.concatenate([p.signs[s.name] for p in parts]) for s in resolved}
        signs[TOKEN_IDS] = ids.numpy().astype(np.int64)
        mags = ({s.name: np.concatenate([p.mags[s.name] for p in parts]) for s in resolved}
                if magnitudes else None)
        meta = CacheMeta(**settings, sites={s.name: parts[0].widths[s.name] for s in resolved},
                         created=ckpt.created if ckpt else now(),
                         build_seconds=round(time.perf_counter() - t0, 1),
                         **TokenForward.combine(records))
        cache = cls(meta, signs, mags)
        if ckpt:
            cache._checkpoint = ckpt.path
        return cache

    @classmethod
    def build_inputs(cls, model, processor, examples, sites=("resid.*",), pool="mean",
                     labels=None, groups=None, **kwargs) -> "SignCache":
        """A cache over examples (images, clips, texts), one pooled vector each; see
        :func:`bagofdims.signs.examples.build_inputs` for every option."""
        return _build_inputs(cls, model, processor, examples, sites=sites, pool=pool,
                            labels=labels, groups=groups, **kwargs)

    @property
    def is_examples(self) -> bool:
        """Rows are examples (``build_inputs``), not vocabulary tokens."""
        return self.meta.inputs == "examples"

    # -- save / load ----------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> Path:
        """Write the cache directory atomically; a finished build's checkpoint is then removed."""
        path = Path(path)

        def fill(tmp: Path) -> None:
            files = {}
            data = {k: np.ascontiguousarray(v) for k, v in self._signs.items()}
            save_file(data, str(tmp / "signs.safetensors"))
            files["signs.safetensors"] = sha256(tmp / "signs.safetensors")
            if self._mags:
                save_file({k: np.ascontiguousarray(v) for k, v in self._mags.items()},
                          str(tmp / "magnitudes.safetensors"))
                files["magnitudes.safetensors"] = sha256(tmp / "magnitudes.safetensors")
            meta = dataclasses.replace(self.meta, files=files)
            meta.validate("the cache being saved")
            (tmp / "meta.json").write_text(json.dumps(meta.to_json(), indent=1))
            self.meta = meta  # now with the files' checksums

        atomic_dir(path, fill, overwrite)
        self.path = path
        ckpt = getattr(self, "_checkpoint", None)
        if ckpt is not None and Path(ckpt).resolve() != path.resolve():
            shutil.rmtree(ckpt, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path, model=None, tokenizer=None, verify: bool = True) -> "SignCache":
        """Memory-map a saved cache; check it against ``model`` / ``tokenizer`` when given.

        ``verify`` checks each data file's sha256 against ``meta.json`` (catches corruption).
        """
        path = Path(path)
        recover(path)  # completes a replacement a killed save left half-done
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise CacheError(
                f"{path} is not a sign cache (no meta.json). Build one with "
                "`bagofdims capture --model NAME --out DIR` or SignCache.build(...).save(DIR)."
            )
        try:
            raw = json.loads(meta_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheError(f"{meta_path} is corrupt: not valid UTF-8 JSON ({err}); rebuild the cache.") from err
        meta = CacheMeta.from_json(raw, str(meta_path))
        arrays = {}
        for fname in ("signs.safetensors", "magnitudes.safetensors"):
            fpath = path / fname
            if fname not in meta.files:
                continue
            if not fpath.exists():
                raise CacheError(f"{fpath} is missing; rebuild the cache.")
            if verify and sha256(fpath) != meta.files[fname]:
                raise CacheError(
                    f"{fpath} is corrupt (its checksum differs from meta.json); rebuild the cache."
                )
            try:
                arrays[fname] = open_mmap(fpath)
            except SafetensorsError as err:
                raise CacheError(f"{fpath} is corrupt or truncated ({err}); rebuild the cache.") from err
        if "signs.safetensors" not in arrays:
            raise CacheError(f"{path} has no signs.safetensors; rebuild the cache.")
        signs = arrays["signs.safetensors"]
        n = meta.n_tokens
        if set(signs) != set(meta.sites) | {TOKEN_IDS}:
            raise CacheError(f"{path}: signs.safetensors holds {sorted(signs)}, meta.json lists "
                             f"{sorted(meta.sites)}; the cache is corrupt, rebuild it.")
        for site, width in meta.sites.items():
            shape = tuple(signs[site].shape) if site in signs else None
            if shape != (n, bits.packed_width(width)):
                raise CacheError(
                    f"{path}: site {site} has shape {shape}, expected {(n, bits.packed_width(width))}; "
                    "the cache is corrupt, rebuild it."
                )
        cache = cls(meta, signs, arrays.get("magnitudes.safetensors"), path)
        cache.check(model, tokenizer)
        return cache


def _run_chunk(forward: TokenForward, ids, magnitudes, bar) -> Chunk:
    """Forward one chunk of tokens in batches; return packed signs (+ magnitudes) per site."""
    signs: dict[str, list] = {name: [] for name in forward.sites}
    mags: dict[str, list] = {name: [] for name in forward.sites} if magnitudes else {}
    widths: dict[str, int] = {}
    with torch.inference_mode(), forward.capture() as cap:
        for batch, values in forward.batches(cap, ids):  # values checked finite
            for name, value in zip(forward.sites, values):
                signs[name].append(bits.pack_signs(value, check=False).cpu().numpy())
                widths[name] = value.shape[-1]
                if magnitudes:
                    mags[name].append(value.abs().half().cpu().numpy())
            bar.update(len(batch))
    return Chunk({k: np.concatenate(v) for k, v in signs.items()},
                  {k: np.concatenate(v) for k, v in mags.items()}, widths)
