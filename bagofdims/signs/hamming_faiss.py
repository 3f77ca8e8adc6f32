"""Exact Hamming top-k on CPU through faiss ``IndexBinaryFlat``, with deterministic ties.

faiss returns the ``k`` smallest Hamming distances exactly, but which keys it keeps among those
tied at the k-th distance is its own business (it differs between its sequential and
database-parallel scans). :class:`FaissHamming` asks for more than ``k`` and re-sorts by
(distance, key index). That is exact whenever the last distance returned is larger than the
k-th: every key at or below the k-th distance is then among those returned. Rows where it is not
(a tie group reaching the end of what faiss returned) are searched again with twice as many,
until it is or every key was returned. So the result always equals the brute-force answer
with ties broken by the lowest key index, the order of :mod:`bagofdims.signs.hamming`.

The least-agreeing keys are the nearest keys to the complemented query (``agreement(q, key) =
hamming(~q, key)`` over the ``d`` bits), so ``largest=False`` is one more faiss search.

faiss runs OpenMP threads of its own: each search uses ``torch.get_num_threads()`` of them and
restores the calling thread's previous setting afterwards. Concurrent searches on one index are
safe (a faiss flat index is read-only during search; each search has its own output arrays).
"""

from __future__ import annotations

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


def exact_knn(index, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest keys of each row of ``x`` in faiss binary ``index``, by (distance, key
    index): ``(int32 [n, k], int64 [n, k])``. Exact for any tie order faiss uses inside."""
    n, m = x.shape[0], index.ntotal
    dist = np.empty((n, k), dtype=np.int32)
    ids = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n)
    ask = min(m, k + max(_EXTRA_MIN, k * _EXTRA_NUM // _EXTRA_DEN))
    while len(rows):
        d_got, i_got = index.search(x if len(rows) == n else x[rows], ask)
        if (i_got < 0).any():  # fewer results than asked from a flat index: never expected
            raise BagOfDimsError("faiss returned fewer neighbours than keys; please report this.")
        key = (d_got.astype(np.int64) << 32) | i_got  # distance, then index (indices < 2**32)
        key.sort(axis=1)
        top = key[:, :k]
        kth = top[:, -1] >> 32
        done = np.ones(len(rows), dtype=bool) if ask == m else d_got.max(axis=1) > kth
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
            dist, ids = exact_knn(self.index, np.ascontiguousarray(x.numpy()), k)
        agree = torch.from_numpy(self.d - dist if largest else dist)
        return agree.to(torch.int32), torch.from_numpy(ids)
