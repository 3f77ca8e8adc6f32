"""Exact Hamming top-k search over packed sign rows: :class:`HammingIndex` and :func:`hamming_topk`.

Scores are ±1 dot products (``dot = 2 * agreement - d``) from one matrix product per block of
queries x keys, on the keys' device. On CPU the product runs in bf16 with bf16 output (oneDNN AMX
/ AVX512-BF16): dots are even integers, exact in bf16 while ``|dot| <= 512``; a row whose block
reaches beyond that (near-duplicate keys, or ``d > 512`` extremes) is recomputed in fp32, so the
result is always exact. On CUDA the product runs in fp16 (exact for ``d <= 2048``).

Selection is exact, ties broken by the lowest key index: each score block is cut into strided
column groups whose maxima give a lower bound on the k-th best score (from a per-row histogram of
the small integer maxima); only the groups reaching it are gathered and ranked by the composite
key ``dot * 2**32 - column``. Like faiss's ``IndexBinaryFlat``, an index keeps its keys in the
form the kernel wants (unpacked ±1), so repeated searches do not pay for unpacking.

An index is safe to search from many threads at once: its keys are read-only after
construction, and each search borrows a score buffer of its own from a small pool.
"""

from __future__ import annotations

import operator
import threading

import torch

from bagofdims.signs.bits import check_packed, matmul_dtype, tail_mask, packed_width, unpack_signs
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
# Score buffers an index keeps for reuse: one per search running at the same time, up to this.
_POOL_MAX = 8


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


def _dot_of(key: torch.Tensor) -> torch.Tensor:
    return -torch.div(-key, _KEY_SHIFT, rounding_mode="floor")


def _score_dtype(device: torch.device, d: int) -> torch.dtype:
    if device.type == "cpu":
        return torch.bfloat16  # exact up to 510, checked per row (see module docstring)
    return matmul_dtype(device, d)  # fp16 on CUDA (exact for d <= 2048), else fp32


def _kth_bound(gmax: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """Per row, the k-th largest of integer-valued ``gmax`` ``[q, g]`` (values in [-d, d])."""
    q = gmax.shape[0]
    width = 2 * d + 1
    # clamp: bf16 rounds beyond ±d near the extremes (such rows are recomputed exactly anyway)
    flat = (gmax.to(torch.int64).clamp_(-d, d) + d) + torch.arange(q, device=gmax.device)[:, None] * width
    hist = torch.bincount(flat.view(-1), minlength=q * width).view(q, width)
    above = hist.flip(1).cumsum(1)  # count of values >= (d - j)
    j = (above >= k).to(torch.int8).argmax(1)
    return (d - j).to(gmax.dtype)


def _block_topk(s: torch.Tensor, k: int, col0: int, d: int) -> torch.Tensor:
    """Exact top-k of one block of integer scores as composite int64 keys, best first.

    Column c belongs to group c mod G. T, the k-th largest group maximum, is a lower bound on the
    k-th largest score, so every top-k element (ties included) lies in a group whose maximum
    is >= T; those groups (a few percent of the block) are the only ones ranked.
    """
    q, kc = s.shape
    group = kc // min(kc, _GROUPS_PER_K * k)
    n_groups = kc // group  # leaves fewer than `group` leftover columns (always candidates)
    dev = s.device
    # local composite keys ``score * kc - column`` in int32 when they fit (half the traffic)
    kdt = torch.int32 if (d + 2) * kc < 2**31 else torch.int64
    if group > 1:
        gmax = s[:, : n_groups * group].view(q, group, n_groups).amax(1)
        keep = gmax >= _kth_bound(gmax, k, d)[:, None]
        # pack each row's kept group ids to the front; padding (-1) goes to a dummy last slot
        slot = keep.cumsum(1) - 1
        n_sel = int(slot[:, -1].max()) + 1
        sel = torch.full((q, n_sel + 1), -1, dtype=torch.int64, device=dev)
        sel.scatter_(1, torch.where(keep, slot, n_sel), torch.arange(n_groups, device=dev).expand(q, -1))
        sel = sel[:, :n_sel]
        steps = torch.arange(group, device=dev) * n_groups
        cols = (sel.clamp(min=0).unsqueeze(-1) + steps).view(q, -1)
        key = s.gather(1, cols).to(kdt).mul_(kc).sub_(cols.to(kdt))
        key.view(q, n_sel, group).masked_fill_((sel < 0).unsqueeze(-1), torch.iinfo(kdt).min)
        if n_groups * group < kc:  # the < n_groups leftover columns are always candidates
            tail = torch.arange(n_groups * group, kc, device=dev, dtype=kdt)
            key = torch.cat([key, s[:, n_groups * group:].to(kdt).mul_(kc).sub_(tail)], 1)
    else:
        key = s.to(kdt).mul_(kc).sub_(torch.arange(kc, device=dev, dtype=kdt))
    best = key.topk(k, dim=1, sorted=True).values.to(torch.int64)
    score = -torch.div(-best, kc, rounding_mode="floor")
    col = score * kc - best
    return score * _KEY_SHIFT - (col + col0)


def _decode(best: torch.Tensor, d: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dot = _dot_of(best)
    idx = dot * _KEY_SHIFT - best
    agree = (dot + d) // 2
    if not largest:
        agree = d - agree
    return agree.to(torch.int32), idx


class HammingIndex:
    """Packed sign rows held ready for repeated exact top-k searches (cf. faiss ``IndexBinaryFlat``).

    ``HammingIndex(keys, d)`` with ``keys`` uint8 ``[m, ceil(d/8)]`` on any device; memory is
    ``m * d`` bf16/fp16 values (56 MB for SmolLM2's 49,152 x 576), plus a score buffer of up to
    ``2**25`` values (64 MB) kept after the first search, one per concurrent search (at most
    8 kept). ``search(queries, k)`` returns ``(agreement int32 [n, k], key index int64 [n, k])``,
    best first, ties to the lowest index; ``largest=False`` gives the least-agreeing keys.
    Thread-safe: concurrent searches on one index give the same results as one at a time.
    """

    def __init__(self, keys: torch.Tensor, d: int, offset: int = 0):
        check_packed(keys, d, "keys")
        if keys.dim() != 2:
            raise InvalidArgument("HammingIndex expects 2-D [rows, bytes] keys.")
        if keys.shape[0] + offset >= _KEY_SHIFT:
            raise InvalidArgument(f"at most 2**32 keys per search, got {keys.shape[0]}; split the keys.")
        self.d, self.offset = d, offset
        self.dtype = _score_dtype(keys.device, d)
        # bf16 needs even dots: an odd width gets a constant +1 column on both sides
        self.pad = int(self.dtype == torch.bfloat16 and d % 2 == 1)
        self.keys = self._unpack(keys)
        self._neg: torch.Tensor | None = None
        self._neg_lock = threading.Lock()
        # Idle score buffers. list.pop/append are atomic, so a search takes one no other search
        # holds without a lock; searches never wait for each other.
        self._pool: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.keys.shape[0]

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

    def search_keys(self, queries: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
        """Composite keys ``dot * 2**32 - index`` of the top-``k`` (merge-able across indexes)."""
        n, m, d = queries.shape[0], len(self), self.d + self.pad
        kp = self._keys(largest)
        q_pm = self._unpack(queries)
        out = torch.empty((n, k), dtype=torch.int64, device=queries.device)
        qc = max(1, _BLOCK_ENTRIES // max(1, m))
        buf = self._take_buffer(min(n, qc))
        try:
            for q0 in range(0, n, qc):
                qb = q_pm[q0 : q0 + qc]
                s = torch.matmul(qb, kp.T, out=buf[: len(qb)])
                top = _block_topk(s, k, self.offset, d)
                if self.dtype == torch.bfloat16 and d > _BF16_EXACT:
                    # rows that reach the inexact bf16 range: recompute in fp32 (rare)
                    bad = ((_dot_of(top[:, 0]) > _BF16_EXACT)
                           | (_dot_of(top[:, -1]) < -_BF16_EXACT)).nonzero().squeeze(1)
                    if len(bad):
                        exact = qb[bad].float() @ kp.float().T
                        top[bad] = _block_topk(exact, k, self.offset, d)
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
        if queries.device != self.keys.device:
            raise InvalidArgument(f"queries on {queries.device} but the index on {self.keys.device}; move one.")
        k = _check_k(k, len(self))
        if queries.shape[0] == 0 or k == 0:
            z = torch.zeros((queries.shape[0], k), dtype=torch.int64, device=queries.device)
            return z.to(torch.int32), z
        return _decode(self.search_keys(queries, k, largest), self.d, largest)


def hamming_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    d: int,
    k: int,
    chunk: int | None = None,
    largest: bool = True,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` keys by sign agreement for every query: ``(int32 [n, k], int64 [n, k])``.

    ``queries`` ``[n, B]`` and ``keys`` ``[m, B]`` are packed signs of width ``d``. Exact; ties
    go to the lowest key index. One-shot form of :class:`HammingIndex`: keys are unpacked
    ``chunk`` rows at a time (default: ~32M entries) and the chunks' results merged, so memory
    stays bounded for any vocabulary; build a :class:`HammingIndex` to search the same keys
    repeatedly. ``backend="faiss"`` (CPU, ``largest=True``; ``pip install bagofdims[fast]``)
    uses faiss ``IndexBinaryFlat``: same agreement values, ties at the k-th value in faiss's order.
    """
    check_packed(queries, d, "queries")
    check_packed(keys, d, "keys")
    if queries.dim() != 2 or keys.dim() != 2:
        raise InvalidArgument("hamming_topk expects 2-D [rows, bytes] queries and keys.")
    if queries.device != keys.device:
        raise InvalidArgument(f"queries on {queries.device} but keys on {keys.device}; move one.")
    n, m = queries.shape[0], keys.shape[0]
    k = _check_k(k, m)
    if backend not in ("torch", "faiss"):
        raise InvalidArgument(f"backend must be 'torch' or 'faiss', got {backend!r}.")
    if n == 0 or k == 0:
        z = torch.zeros((n, k), dtype=torch.int64, device=queries.device)
        return z.to(torch.int32), z
    if backend == "faiss":
        return _faiss_topk(queries, keys, d, k, largest)
    kc = chunk if chunk is not None else max(k, _KEY_ENTRIES // max(1, d))
    if kc < 1:
        raise InvalidArgument(f"chunk={chunk} must be a positive number of keys.")
    if kc >= m:
        return HammingIndex(keys, d).search(queries, k, largest)
    best = torch.full((n, k), _I64_MIN, dtype=torch.int64, device=queries.device)
    for k0 in range(0, m, kc):
        part = HammingIndex(keys[k0 : k0 + kc], d, offset=k0)
        top = part.search_keys(queries, min(k, len(part)), largest)
        best = torch.cat([best, top], 1).topk(k, dim=1, sorted=True).values
    return _decode(best, d, largest)


def _faiss_topk(
    queries: torch.Tensor, keys: torch.Tensor, d: int, k: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss: pip install bagofdims[fast]") from e
    if not largest or queries.device.type != "cpu":
        raise InvalidArgument("backend='faiss' supports largest=True on CPU only; use backend='torch'.")
    mask = tail_mask(d, queries.device)  # zero padding bits on both sides: they then agree
    index = faiss.IndexBinaryFlat(8 * packed_width(d))
    index.add((keys & mask).contiguous().numpy())
    dist, idx = index.search((queries & mask).contiguous().numpy(), k)
    return d - torch.from_numpy(dist).to(torch.int32), torch.from_numpy(idx).to(torch.int64)
