"""Exact Hamming top-k search over packed sign rows: :class:`HammingIndex` and :func:`hamming_topk`.

Two backends give the same answer, ties broken by the lowest key index:

* ``"torch"``: ±1 dot products (``dot = 2 * agreement - d``) from one matrix product per block of
  queries x keys on the keys' device, then an exact selection. On CPU the product runs in bf16
  with bf16 output (AMX / AVX512-BF16), exact while ``|dot| <= 510``. Beyond that (a query's own
  row or near-duplicates, at ``d > 510``) a value may be rounded; rounding is monotone, so the
  selected set is still right whenever the k-th value is exact, and only the few selected
  values above 510 are recounted exactly from the packed bits (XOR + popcount) and re-sorted. A
  row whose k-th value itself is beyond 510 is scored exactly from bf16 products over chunks of
  256 dimensions (each exact) summed in fp32. On CUDA the product runs in fp16 (exact for
  ``d <= 2048``, fp32 beyond).
* ``"faiss"`` (CPU, ``pip install bagofdims[fast]``): faiss ``IndexBinaryFlat`` over the packed
  keys, ties made exact as in :mod:`bagofdims.signs.hamming_faiss`.

``"auto"`` (the default) takes torch on GPUs and on CPUs with AMX tiles (there the bf16 product
of 1,024 x 49,152 x 576 takes ~0.05 s against ~0.2 s for faiss's whole search, and the torch
search measured x0.8 of faiss's time); elsewhere faiss when installed (on a Zen 4 CPU without
AMX the torch kernel measured x1.6-2.0 of faiss's time), else torch. ``scripts/bench_readers.py``
prints both backends against plain faiss.

Selection (torch): each score block is cut into strided column groups; the k-th largest group
maximum is a lower bound on the k-th best score, so every top-k element (ties included) lies in
a group whose maximum reaches it. A top-(k + k/2 + 8) of the group maxima finds them (rows
where the last one still reaches the bound are redone with twice as many); their columns are
ranked by the composite key ``dot * kc - column``. An index keeps its keys in the form its
kernel wants (unpacked ±1 for torch, packed for faiss), so repeated searches do not re-pack.

An index is safe to search from many threads at once: its keys are read-only after
construction, and each torch search borrows a score buffer of its own from a small pool.
"""

from __future__ import annotations

import operator
import threading

import numpy as np
import torch

from bagofdims.signs import hamming_faiss
from bagofdims.signs.bits import check_packed, matmul_dtype, tail_mask, unpack_signs
from bagofdims.errors import InvalidArgument, InvalidType

# Score-matrix block (queries x keys) kept at about this many entries: big enough for an
# efficient matrix product (bf16: 64 MB), few enough blocks that per-block selection overhead
# stays small; measured best on a 2-core AMX CPU (scripts/bench_readers.py).
_BLOCK_ENTRIES = 1 << 25
# Keys unpacked to ±1 at a time by hamming_topk (bounds memory for vocabulary-sized key sets).
_KEY_ENTRIES = 1 << 25
# Composite sort key: dot * 2**32 - key index (indices must stay below 2**32).
_KEY_SHIFT = 1 << 32
# Column groups per wanted key in the selection: more groups, fewer candidates per group.
_GROUPS_PER_K = 32
_I64_MIN = torch.iinfo(torch.int64).min
_BF16_EXACT = 510  # even |dot| <= 510 is exact in bf16; 512 may be a rounded 514
_EXACT_CHUNK = 256  # any sum of <= 256 terms of ±1 is exact in bf16, whatever the accumulation
# Score buffers an index keeps for reuse: one per search running at the same time, up to this.
_POOL_MAX = 8
BACKENDS = ("auto", "torch", "faiss")


def _check_k(k, m: int) -> int:
    """``k`` as an int in ``0..m`` (numpy ints welcome; floats and bools refused, not truncated)."""
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise InvalidType(f"k must be an int, got {k!r} ({type(k).__name__}); pass a whole number.") from None
    if k < 0 or k > m:
        raise InvalidArgument(f"k={k} must be between 0 and the number of keys ({m}); lower k.")
    return k


def _amx() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported()) and torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):  # private torch API: absent means "unknown"
        return False


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend ``backend`` stands for on ``device`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend != "auto":
        return backend
    if device.type != "cpu" or _amx() or not hamming_faiss.available():
        return "torch"
    return "faiss"


def _dot_of(key: torch.Tensor) -> torch.Tensor:
    return -torch.div(-key, _KEY_SHIFT, rounding_mode="floor")


def _score_dtype(device: torch.device, d: int) -> torch.dtype:
    if device.type == "cpu":
        return torch.bfloat16  # exact up to 510 (see the module docstring)
    return matmul_dtype(device, d)  # fp16 on CUDA (exact for d <= 2048), else fp32


def _ranked(s: torch.Tensor, cols: torch.Tensor, k: int, col0: int, kdt: torch.dtype) -> torch.Tensor:
    """Top-k of ``s`` over the candidate columns ``cols`` as global composite keys, best first."""
    kc = s.shape[1]
    key = s.gather(1, cols).to(kdt).mul_(kc).sub_(cols.to(kdt))
    best = key.topk(k, dim=1, sorted=True).values.to(torch.int64)
    score = -torch.div(-best, kc, rounding_mode="floor")
    return score * _KEY_SHIFT - (score * kc - best + col0)


def _block_topk(s: torch.Tensor, k: int, col0: int, d: int) -> torch.Tensor:
    """Exact top-k of one block of integer scores ``[q, kc]`` as composite int64 keys, best
    first (see the module docstring). ``|scores| <= d`` up to bf16 rounding."""
    q, kc = s.shape
    dev = s.device
    # local keys ``score * kc - column`` in int32 when they fit (half the traffic)
    kdt = torch.int32 if (d + d // 128 + 2) * kc < 2**31 else torch.int64
    group = kc // min(kc, _GROUPS_PER_K * k)
    if group == 1:
        return _ranked(s, torch.arange(kc, device=dev).expand(q, -1), k, col0, kdt)
    n_groups = kc // group  # column c < n_groups * group is in group c mod n_groups
    gmax = s[:, : n_groups * group].view(q, group, n_groups).amax(1)
    steps = torch.arange(group, device=dev) * n_groups
    tail = torch.arange(n_groups * group, kc, device=dev)  # fewer than `group`: always candidates
    out = torch.empty((q, k), dtype=torch.int64, device=dev)
    todo = torch.arange(q, device=dev)
    take = min(n_groups, k + k // 2 + 8)
    while len(todo):
        whole = len(todo) == q
        gv, gi = (gmax if whole else gmax[todo]).topk(take, dim=1, sorted=True)
        # every group reaching the bound gv[:, k-1] was taken unless the last one taken does
        done = gv[:, -1] < gv[:, k - 1] if take < n_groups else torch.ones_like(gv[:, 0], dtype=torch.bool)
        cols = (gi.unsqueeze(-1) + steps).view(len(todo), -1)
        cols = torch.cat([cols, tail.expand(len(todo), -1)], 1)
        if whole and bool(done.all()):
            return _ranked(s, cols, k, col0, kdt)
        r = done.nonzero().squeeze(1)
        if len(r):
            out[todo[r]] = _ranked(s[todo[r]], cols[r], k, col0, kdt)
        todo = todo[~done]
        take = min(n_groups, 2 * take)
    return out


def _exact_scores(q_pm: torch.Tensor, k_pm: torch.Tensor) -> torch.Tensor:
    """±1 dot products, exact at any width: bf16 products over 256-dim chunks, summed in fp32."""
    acc = None
    for c0 in range(0, q_pm.shape[1], _EXACT_CHUNK):
        part = (q_pm[:, c0 : c0 + _EXACT_CHUNK] @ k_pm[:, c0 : c0 + _EXACT_CHUNK].T).float()
        acc = part if acc is None else acc.add_(part)
    return acc


def _decode(best: torch.Tensor, d: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dot = _dot_of(best)
    idx = dot * _KEY_SHIFT - best
    agree = (dot + d) // 2
    if not largest:
        agree = d - agree
    return agree.to(torch.int32), idx


class HammingIndex:
    """Packed sign rows held ready for repeated exact top-k searches (cf. faiss ``IndexBinaryFlat``).

    ``HammingIndex(keys, d, backend="auto")`` with ``keys`` uint8 ``[m, ceil(d/8)]`` on any
    device. ``search(queries, k)`` returns ``(agreement int32 [n, k], key index int64 [n, k])``,
    best first, ties to the lowest index; ``largest=False`` gives the least-agreeing keys. Every
    backend gives exactly this answer (see the module docstring for which ``"auto"`` takes).
    Memory: torch keeps ``m * d`` bf16/fp16 values (56 MB for SmolLM2's 49,152 x 576) plus a score
    buffer of up to ``2**25`` values (64 MB) per concurrent search (at most 8 kept); faiss keeps
    the packed rows. Thread-safe: concurrent searches on one index give the results of one at
    a time.
    """

    def __init__(self, keys: torch.Tensor, d: int, offset: int = 0, backend: str = "auto"):
        check_packed(keys, d, "keys")
        if keys.dim() != 2:
            raise InvalidArgument("HammingIndex expects 2-D [rows, bytes] keys.")
        if keys.shape[0] + offset >= _KEY_SHIFT:
            raise InvalidArgument(f"at most 2**32 keys per search, got {keys.shape[0]}; split the keys.")
        self.d, self.offset = d, offset
        self.backend = resolve_backend(backend, keys.device)
        self.device = keys.device
        self._faiss = None
        # Idle score buffers. list.pop/append are atomic, so a search takes one no other search
        # holds without a lock; searches never wait for each other.
        self._pool: list[torch.Tensor] = []
        if self.backend == "faiss":
            if offset:
                raise InvalidArgument("backend='faiss' searches whole key sets (offset must be 0).")
            self._faiss = hamming_faiss.FaissHamming(keys, d)
            self._m = len(self._faiss)
            return
        self._m = keys.shape[0]
        self.dtype = _score_dtype(keys.device, d)
        # bf16 needs even dots: an odd width gets a constant +1 column on both sides
        self.pad = int(self.dtype == torch.bfloat16 and d % 2 == 1)
        self.keys = self._unpack(keys)
        self._mask = tail_mask(d, keys.device)
        # packed rows for exact recounts of bf16-rounded values (CPU only)
        self._packed = (keys & self._mask).numpy() if self.dtype == torch.bfloat16 else None
        self._neg: torch.Tensor | None = None
        self._neg_lock = threading.Lock()

    def __len__(self) -> int:
        return self._m

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        pm = unpack_signs(packed, self.d, self.dtype)
        return torch.nn.functional.pad(pm, (0, self.pad), value=1) if self.pad else pm

    def _keys(self, largest: bool) -> torch.Tensor:
        if largest:
            return self.keys
        neg = self._neg
        if neg is None:  # built once: agreement with -keys = disagreement
            with self._neg_lock:
                neg = self._neg
                if neg is None:
                    neg = -self.keys
                    neg[:, self.d:] = 1  # the pad column stays +1
                    self._neg = neg  # published only when complete
        return neg

    def _take_buffer(self, rows: int) -> torch.Tensor:
        """A score buffer ``[>= rows, m]`` that no other search holds; hand it back with
        :meth:`_give_back`. Reused between searches: a fresh 50-100 MB output per product costs
        as much as the product itself on CPU (the pages are faulted in anew). On CUDA the
        caching allocator already reuses memory, with the stream ordering a pool would lose."""
        if self.keys.device.type != "cpu":
            return torch.empty((rows, len(self)), dtype=self.dtype, device=self.keys.device)
        try:
            buf = self._pool.pop()
        except IndexError:
            buf = None
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty((rows, len(self)), dtype=self.dtype, device=self.keys.device)
        return buf

    def _give_back(self, buf: torch.Tensor) -> None:
        if buf.device.type == "cpu" and len(self._pool) < _POOL_MAX:
            self._pool.append(buf)

    def _exact_top(self, top: torch.Tensor, q_packed: np.ndarray, q_pm: torch.Tensor,
                   kp: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
        """CPU ``top`` from bf16 scores made exact (see the module docstring), in place. The
        recount runs in numpy: a few dozen tiny torch ops would each be a parallel region, which
        costs far more than the work on a loaded multi-threaded CPU."""
        dp, e = self.d + self.pad, _BF16_EXACT
        t = top.numpy()  # shares top's memory
        dots = -np.floor_divide(-t, _KEY_SHIFT)
        whole = np.abs(dots[:, -1]) > e  # k-th value rounded: rescore the row
        fix = np.flatnonzero((dots[:, 0] > e) & ~whole)
        if len(fix):  # the set is right; recount the values above 510 and re-sort
            sub, sd = t[fix], dots[fix]
            i, j = np.nonzero(sd > e)
            col = sd[i, j] * _KEY_SHIFT - sub[i, j] - self.offset
            dot = self.d - 2 * np.bitwise_count(q_packed[fix[i]] ^ self._packed[col]).sum(1, dtype=np.int64)
            sub[i, j] = ((dot if largest else -dot) + self.pad) * _KEY_SHIFT - (col + self.offset)
            t[fix] = -np.sort(-sub, axis=1)
        rows = torch.from_numpy(np.flatnonzero(whole))
        if len(rows):
            top[rows] = _block_topk(_exact_scores(q_pm[rows], kp), k, self.offset, dp)
        return top

    def search_keys(self, queries: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
        """Composite keys ``dot * 2**32 - index`` of the top-``k`` (merge-able across indexes;
        torch backend)."""
        if self._faiss is not None:
            raise InvalidArgument("search_keys needs backend='torch'; use search().")
        n, m, dp = queries.shape[0], len(self), self.d + self.pad
        kp = self._keys(largest)
        q_pm = self._unpack(queries)
        rounded = self.dtype == torch.bfloat16 and dp > _BF16_EXACT
        q_packed = (queries & self._mask).numpy() if rounded else None
        out = torch.empty((n, k), dtype=torch.int64, device=queries.device)
        qc = max(1, _BLOCK_ENTRIES // max(1, m))
        buf = self._take_buffer(min(n, qc))
        try:
            for q0 in range(0, n, qc):
                qb = q_pm[q0 : q0 + qc]
                s = torch.matmul(qb, kp.T, out=buf[: len(qb)])
                top = _block_topk(s, k, self.offset, dp)
                if rounded:
                    top = self._exact_top(top, q_packed[q0 : q0 + qc], qb, kp, k, largest)
                out[q0 : q0 + qc] = top
        finally:
            self._give_back(buf)
        return out - self.pad * _KEY_SHIFT  # dots without the pad column

    def search(self, queries: torch.Tensor, k: int, largest: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` keys by sign agreement for each packed query row (see the class docstring)."""
        check_packed(queries, self.d, "queries")
        if queries.dim() != 2:
            raise InvalidArgument("search expects 2-D [rows, bytes] queries.")
        if queries.device != self.device:
            raise InvalidArgument(f"queries on {queries.device} but the index on {self.device}; move one.")
        k = _check_k(k, len(self))
        if queries.shape[0] == 0 or k == 0:
            z = torch.zeros((queries.shape[0], k), dtype=torch.int64, device=queries.device)
            return z.to(torch.int32), z
        if self._faiss is not None:
            return self._faiss.search(queries, k, largest)
        return _decode(self.search_keys(queries, k, largest), self.d, largest)


def hamming_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    d: int,
    k: int,
    chunk: int | None = None,
    largest: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` keys by sign agreement for every query: ``(int32 [n, k], int64 [n, k])``.

    ``queries`` ``[n, B]`` and ``keys`` ``[m, B]`` are packed signs of width ``d``. Exact; ties
    go to the lowest key index, on every backend (see the module docstring). One-shot form of
    :class:`HammingIndex`; build an index to search the same keys repeatedly. The torch backend
    unpacks keys ``chunk`` rows at a time (default: ~32M entries) and merges the chunks'
    results, so memory stays bounded for any vocabulary; faiss works on the packed keys whole.
    """
    check_packed(queries, d, "queries")
    check_packed(keys, d, "keys")
    if queries.dim() != 2 or keys.dim() != 2:
        raise InvalidArgument("hamming_topk expects 2-D [rows, bytes] queries and keys.")
    if queries.device != keys.device:
        raise InvalidArgument(f"queries on {queries.device} but keys on {keys.device}; move one.")
    n, m = queries.shape[0], keys.shape[0]
    k = _check_k(k, m)
    backend = resolve_backend(backend, keys.device)
    kc = chunk if chunk is not None else max(k, _KEY_ENTRIES // max(1, d))
    if kc < 1:
        raise InvalidArgument(f"chunk={chunk} must be a positive number of keys.")
    if n == 0 or k == 0:
        z = torch.zeros((n, k), dtype=torch.int64, device=queries.device)
        return z.to(torch.int32), z
    if backend == "faiss" or kc >= m:
        return HammingIndex(keys, d, backend=backend).search(queries, k, largest)
    best = torch.full((n, k), _I64_MIN, dtype=torch.int64, device=queries.device)
    for k0 in range(0, m, kc):
        part = HammingIndex(keys[k0 : k0 + kc], d, offset=k0, backend="torch")
        top = part.search_keys(queries, min(k, len(part)), largest)
        best = torch.cat([best, top], 1).topk(k, dim=1, sorted=True).values
    return _decode(best, d, largest)
