"""Exact Hamming top-k on CPU through faiss ``IndexBinaryFlat``, with deterministic ties.

faiss returns the ``k`` smallest Hamming distances exactly, but which keys it keeps among those
tied at the k-th distance is not part of its documented contract. Its exact heap scan goes over
the keys in index order per query and replaces the heap's top only on a strictly smaller
distance, so it keeps the lowest indices; that is checked, not assumed: the first search at a
given faiss thread count runs a small tie-heavy probe (one query and many, exact duplicates,
k from 1 to past the tie groups) against a brute-force count. Where the probe agrees, faiss is
asked for exactly ``k`` and its rows are re-sorted by (distance, key index).

Where it does not (another faiss build or version), :class:`FaissHamming` asks for more than
``k`` and re-sorts by (distance, key index). That is exact whenever the last distance returned
is larger than the k-th: every key at or below the k-th distance is then among those returned.
Rows where it is not (a tie group reaching the end of what faiss returned) are searched again
with twice as many, until it is or every key was returned. Either way the result equals the
brute-force answer with ties broken by the lowest key index, the order of
:mod:`bagofdims.signs.hamming`. Asking ``k + k/2 + 16`` costs ~10% of the search.

The least-agreeing keys are the nearest keys to the complemented query (``agreement(q, key) =
hamming(~q, key)`` over the ``d`` bits), so ``largest=False`` is one more faiss search.

faiss runs OpenMP threads of its own: each search uses ``torch.get_num_threads()`` of them and
restores the calling thread's previous setting afterwards. Concurrent searches on one index are
safe (a faiss flat index is read-only during search; each search has its own output arrays).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from bagofdims.errors import BagOfDimsError, InvalidArgument
from bagofdims.signs.bits import packed_width, tail_mask

# First ask: k + k/2 + 16 candidates. On random 576-bit rows (49,152 keys, k = 100) the tie group
# at the 100th distance has ~20 keys and ended within 150 candidates on every row measured; a
# second ask costs a whole extra search for the rows that need it (scripts/bench_readers.py).
_EXTRA_NUM, _EXTRA_DEN, _EXTRA_MIN = 1, 2, 16


def available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss: pip install bagofdims[fast]") from e
    return faiss


@contextmanager
def _omp_threads(faiss, n: int) -> Iterator[None]:
    """faiss's OpenMP thread count set to ``n`` for the block, then put back as it was."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_probe_lock = threading.Lock()
_lowest_ties: dict[int, bool] = {}  # faiss thread count -> probe result


def _probe_tie_order(faiss) -> bool:
    """Does this faiss keep the lowest key indices among keys tied at the k-th distance? Tie-
    heavy random 16-bit rows plus 200 exact duplicates, one query and 64, k = 1..600, against
    a brute-force XOR + popcount ranked by (distance, index)."""
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, (3000, 2), dtype=np.uint8)
    keys[1000:1200] = keys[7]
    q = np.concatenate([keys[7:8], rng.integers(0, 256, (63, 2), dtype=np.uint8)])
    dist = np.bitwise_count(q[:, None, :] ^ keys[None, :, :]).sum(-1, dtype=np.int64)
    want = np.sort((dist << 32) | np.arange(len(keys)), axis=1) & 0xFFFFFFFF
    index = faiss.IndexBinaryFlat(16)
    index.add(keys)
    for rows in (slice(0, 1), slice(1, 2), slice(0, len(q))):  # one query (a duplicate), many
        for k in (1, 37, 250, 600):
            if not np.array_equal(index.search(q[rows], k)[1], want[rows, :k]):
                return False
    return True


def keeps_lowest_ties(faiss) -> bool:
    """The probe's answer at faiss's current thread count (run once per count)."""
    n = faiss.omp_get_max_threads()
    with _probe_lock:
        if n not in _lowest_ties:
            _lowest_ties[n] = _probe_tie_order(faiss)
        return _lowest_ties[n]


def exact_knn(index, x: np.ndarray, k: int, lowest_ties: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys of each row of ``x`` in faiss binary ``index``, by (distance, key
    index): ``(int32 [n, k], int64 [n, k])``. With ``lowest_ties`` (faiss known to keep the
    lowest indices in a tie) one search of ``k``; otherwise exact for any tie order faiss uses."""
    n, m = x.shape[0], index.ntotal
    dist = np.empty((n, k), dtype=np.int32)
    ids = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n)
    ask = k if lowest_ties else min(m, k + max(_EXTRA_MIN, k * _EXTRA_NUM // _EXTRA_DEN))
    while len(rows):
        d_got, i_got = index.search(x if len(rows) == n else x[rows], ask)
        if (i_got < 0).any():  # fewer results than asked from a flat index: never expected
            raise BagOfDimsError("faiss returned fewer neighbours than keys; please report this.")
        key = (d_got.astype(np.int64) << 32) | i_got  # distance, then index (indices < 2**32)
        key.sort(axis=1)
        top = key[:, :k]
        kth = top[:, -1] >> 32
        if lowest_ties or ask == m:
            done = np.ones(len(rows), dtype=bool)
        else:
            done = d_got.max(axis=1) > kth
        dist[rows[done]] = top[done] >> 32
        ids[rows[done]] = top[done] & 0xFFFFFFFF
        rows = rows[~done]
        ask = min(m, 2 * ask)
    return dist, ids


class FaissHamming:
    """Packed CPU keys in a faiss ``IndexBinaryFlat`` (``m * ceil(d/8)`` bytes), searched exactly."""

    def __init__(self, keys: torch.Tensor, d: int):
        if keys.device.type != "cpu":
            raise InvalidArgument(f"backend='faiss' runs on CPU; the keys are on {keys.device}. "
                                  "Use backend='torch' (or 'auto').")
        faiss = _faiss()
        self.d = d
        self._mask = tail_mask(d, keys.device)  # padding bits zeroed on both sides: they agree
        self.index = faiss.IndexBinaryFlat(8 * packed_width(d))
        self.index.add(np.ascontiguousarray((keys & self._mask).numpy()))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: torch.Tensor, k: int, largest: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(agreement int32 [n, k], key index int64 [n, k])``, as :class:`HammingIndex`."""
        x = (queries if largest else ~queries) & self._mask
        faiss = _faiss()
        with _omp_threads(faiss, torch.get_num_threads()):
            dist, ids = exact_knn(self.index, np.ascontiguousarray(x.numpy()), k,
                                  keeps_lowest_ties(faiss))
        agree = torch.from_numpy(self.d - dist if largest else dist)
        return agree.to(torch.int32), torch.from_numpy(ids)
