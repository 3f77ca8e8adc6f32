"""Every Hamming backend gives the brute-force answer: agreement, then the lowest key index."""

import threading

import numpy as np
import pytest
import torch

from bagofdims.signs import bits, hamming, hamming_faiss
from bagofdims.signs.hamming import HammingIndex, hamming_topk

try:
    import faiss
except ImportError:  # the torch backend is still tested
    faiss = None
needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss not installed (bagofdims[fast])")
BACKENDS = ["torch", pytest.param("faiss", marks=needs_faiss), "auto"]


def _brute(q: torch.Tensor, keys: torch.Tensor, d: int, k: int, largest: bool = True):
    """numpy reference: XOR + popcount of every pair, ranked by (agreement, index)."""
    mask = bits.tail_mask(d, q.device).numpy()
    qa, ka = q.numpy() & mask, keys.numpy() & mask
    agree = d - np.bitwise_count(qa[:, None, :] ^ ka[None, :, :]).sum(-1, dtype=np.int64)
    score = agree if largest else -agree
    order = np.lexsort((np.broadcast_to(np.arange(len(ka)), score.shape), -score), axis=1)[:, :k]
    return np.take_along_axis(agree, order, 1).astype(np.int32), order.astype(np.int64)


def _check(got, want):
    vals, idx = got
    assert vals.dtype == torch.int32 and idx.dtype == torch.int64
    np.testing.assert_array_equal(idx.numpy(), want[1])
    np.testing.assert_array_equal(vals.numpy(), want[0])


def _tied_data(d: int, m: int, seed: int):
    """Random keys plus blocks of exact duplicates and near-duplicates; queries: random rows
    and the keys' own rows (a duplicated row, its copies, rows near many keys)."""
    g = torch.Generator().manual_seed(seed)
    nb = bits.packed_width(d)
    keys = torch.randint(0, 256, (m, nb), dtype=torch.uint8, generator=g)
    keys[m // 4 : m // 4 + 40] = keys[5]  # 41 copies of row 5
    pm = bits.unpack_signs(keys[7:8], d, torch.int8).repeat(60, 1)
    flips = torch.rand(60, d, generator=g) < 0.02  # 60 rows within a few bits of row 7
    pm[flips] = -pm[flips]
    keys[m // 2 : m // 2 + 60] = bits.pack_signs(pm.float())
    rand_q = torch.randint(0, 256, (9, nb), dtype=torch.uint8, generator=g)
    self_q = keys[torch.tensor([5, 7, m // 4 + 3, m // 2, m - 1, 0])]
    return keys, torch.cat([rand_q, self_q])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [13, 63, 64, 100, 575, 576, 1030])
@pytest.mark.parametrize("largest", [True, False])
def test_backends_equal_brute_force_with_ties(backend, d, largest):
    keys, q = _tied_data(d, 3000, seed=d)
    want = {k: _brute(q, keys, d, k, largest) for k in (1, 10, 100)}
    index = HammingIndex(keys, d, backend=backend)
    for k, w in want.items():
        _check(index.search(q, k, largest), w)
    _check(hamming_topk(q, keys, d, 100, largest=largest, backend=backend), want[100])
    if backend == "torch":  # chunked one-shot search, merged
        _check(hamming_topk(q, keys, d, 100, chunk=701, largest=largest, backend=backend), want[100])


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_beyond_queries_all_keys_and_empty(backend):
    keys, q = _tied_data(70, 150, seed=1)
    q = q[:3]
    index = HammingIndex(keys, 70, backend=backend)
    _check(index.search(q, 50), _brute(q, keys, 70, 50))  # k > number of queries
    _check(index.search(q, 150, largest=False), _brute(q, keys, 70, 150, largest=False))  # k = m
    for k in (0, 4):
        v, i = index.search(q[:0], k)
        assert v.shape == i.shape == (0, k) and v.dtype == torch.int32 and i.dtype == torch.int64
    v, i = index.search(q, 0)
    assert v.shape == i.shape == (3, 0)
    with pytest.raises(ValueError, match="k=151"):
        index.search(q, 151)


class _SearchSpy:
    """A faiss index stand-in that records each search's size and faiss's thread count."""

    def __init__(self, index):
        self.index, self.asks, self.threads = index, [], []

    @property
    def ntotal(self):
        return self.index.ntotal

    def search(self, x, k):
        self.asks.append((len(x), k))
        self.threads.append(faiss.omp_get_max_threads())
        return self.index.search(x, k)


class _ReversedTies(_SearchSpy):
    """A faiss index that keeps the *highest* indices among keys tied at the k-th distance
    (what a faiss with another scan order could do), from an exact brute force."""

    def __init__(self, keys: np.ndarray):
        super().__init__(None)
        self.keys = keys

    @property
    def ntotal(self):
        return len(self.keys)

    def search(self, x, k):
        self.asks.append((len(x), k))
        dist = np.bitwise_count(x[:, None, :] ^ self.keys[None]).sum(-1, dtype=np.int64)
        order = np.lexsort((-np.arange(len(self.keys))[None].repeat(len(x), 0), dist), axis=1)
        top = order[:, :k]
        return np.take_along_axis(dist, top, 1).astype(np.int32), top.astype(np.int64)


@needs_faiss
def test_faiss_tie_order_is_probed_and_the_fast_path_asks_k_once():
    """The installed faiss keeps the lowest indices in a tie (the probe says so), so one search
    of exactly k serves every row, even 300 copies of a query."""
    assert hamming_faiss.keeps_lowest_ties(faiss)
    d, m = 96, 2000
    keys, q = _tied_data(d, m, seed=3)
    keys[100:400] = q[0]
    index = HammingIndex(keys, d, backend="faiss")
    spy = _SearchSpy(index._faiss.index)
    index._faiss.index = spy
    _check(index.search(q, 100), _brute(q, keys, d, 100))
    assert spy.asks == [(len(q), 100)]


def test_probe_rejects_a_faiss_with_another_tie_order():
    class Index(_ReversedTies):
        def add(self, keys):
            self.keys = keys

    fake = type("FakeFaiss", (), {})()
    fake.IndexBinaryFlat = lambda d: Index(np.zeros((0, 2), np.uint8))
    assert hamming_faiss._probe_tie_order(fake) is False


@needs_faiss
def test_faiss_asks_again_until_the_tie_group_is_covered(monkeypatch):
    """Where faiss's tie order is not the lowest index (a faiss keeping the highest is stood
    in), 300 copies of a query fill the first 150 candidates and then 300 (the tie might go
    on), so that row is asked again with 300, then 600; the other rows are settled by the
    first ask; the answer is still the brute force's."""
    monkeypatch.setattr(hamming_faiss, "keeps_lowest_ties", lambda faiss: False)
    d, m = 96, 2000
    keys, q = _tied_data(d, m, seed=3)
    keys[100:400] = q[0]
    index = HammingIndex(keys, d, backend="faiss")
    spy = _ReversedTies(np.ascontiguousarray((keys & bits.tail_mask(d, keys.device)).numpy()))
    index._faiss.index = spy
    _check(index.search(q, 100), _brute(q, keys, d, 100))
    assert spy.asks == [(len(q), 150), (1, 300), (1, 600)]


@needs_faiss
def test_faiss_uses_torch_threads_and_restores_its_setting(monkeypatch):
    """faiss runs torch.get_num_threads() threads, and the caller's faiss setting comes back.
    (Where torch and faiss share one OpenMP runtime, as in the pip wheels, the two settings are
    one; torch's count is stubbed here so the two can differ.)"""
    keys, q = _tied_data(64, 500, seed=4)
    index = HammingIndex(keys, 64, backend="faiss")
    spy = _SearchSpy(index._faiss.index)
    index._faiss.index = spy
    before = faiss.omp_get_max_threads()
    try:
        for n in (1, 2):
            monkeypatch.setattr(hamming_faiss.torch, "get_num_threads", lambda n=n: n)
            faiss.omp_set_num_threads(3)
            _check(index.search(q, 5), _brute(q, keys, 64, 5))
            assert spy.threads[-1] == n
            assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_concurrent_searches_on_one_index(backend):
    keys, q = _tied_data(576, 4000, seed=5)
    jobs = [(q[i % len(q):][:7], k, largest) for i, k, largest in
            zip(range(24), [1, 30, 100, 7] * 6, [True, False] * 12)]
    want = [_brute(x, keys, 576, k, largest) for x, k, largest in jobs]
    index = HammingIndex(keys, 576, backend=backend)
    start, wrong = threading.Barrier(6), []

    def worker(t):
        start.wait()
        for j in list(range(t, len(jobs), 6)) * 3:
            x, k, largest = jobs[j]
            v, i = index.search(x, k, largest)
            if not (np.array_equal(i.numpy(), want[j][1]) and np.array_equal(v.numpy(), want[j][0])):
                wrong.append((t, j))

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert wrong == []


def test_torch_rescores_rows_whose_kth_value_bf16_rounds(monkeypatch):
    """More than k near-copies of a query at d = 1030: the k-th dot is above 510, where bf16
    rounds, so the row is scored exactly from 256-dim chunks; other rows are untouched."""
    calls = []
    real = hamming._exact_scores
    monkeypatch.setattr(hamming, "_exact_scores", lambda a, b: calls.append(len(a)) or real(a, b))
    d = 1030
    g = torch.Generator().manual_seed(6)
    keys = bits.pack_signs(torch.randn(3000, d, generator=g))
    q = bits.pack_signs(torch.randn(4, d, generator=g))
    pm = bits.unpack_signs(q[1:2], d, torch.int8).repeat(150, 1)
    flips = torch.rand(150, d, generator=g) < 0.03
    pm[flips] = -pm[flips]
    keys[1000:1150] = bits.pack_signs(pm.float())
    keys[2000:2010] = q[1]  # exact copies too
    for largest in (True, False):
        src = q if largest else (~q) & bits.tail_mask(d, q.device)
        keys_l = keys.clone()
        keys_l[1000:1150] = src[1] ^ (keys[1000:1150] ^ q[1])  # same flips around src
        keys_l[2000:2010] = src[1]
        calls.clear()
        _check(HammingIndex(keys_l, d, backend="torch").search(q, 100, largest),
               _brute(q, keys_l, d, 100, largest))
        assert calls == [1]


def test_torch_selection_widens_where_group_maxima_tie():
    """Rows whose group maxima tie past the first top-(k + k/2 + 8) groups (many exact copies)
    take more groups; exact either way."""
    d, m = 64, 5000
    g = torch.Generator().manual_seed(8)
    keys = torch.randint(0, 256, (m, 8), dtype=torch.uint8, generator=g)
    q = torch.randint(0, 256, (6, 8), dtype=torch.uint8, generator=g)
    keys[::50] = q[2]  # 100 copies spread over every group
    for k in (10, 40):
        _check(HammingIndex(keys, d, backend="torch").search(q, k), _brute(q, keys, d, k))


def test_backend_choice():
    cpu = torch.device("cpu")
    assert hamming.resolve_backend("torch", cpu) == "torch"
    assert hamming.resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        hamming.resolve_backend("annoy", cpu)
    keys = torch.zeros(4, 2, dtype=torch.uint8)
    if faiss is not None:
        assert HammingIndex(keys, 16, backend="faiss").backend == "faiss"
    with pytest.raises(ValueError, match="runs on CPU"):
        hamming_faiss.FaissHamming(torch.zeros(4, 2, dtype=torch.uint8, device="meta"), 16)


@pytest.mark.parametrize("amx,faiss_ok,want", [
    (True, True, "torch"), pytest.param(False, True, "faiss", marks=needs_faiss), (False, False, "torch")])
def test_auto_takes_torch_with_amx_else_faiss(monkeypatch, amx, faiss_ok, want):
    monkeypatch.setattr(hamming, "_amx", lambda: amx)
    monkeypatch.setattr(hamming_faiss, "available", lambda: faiss_ok)
    assert hamming.resolve_backend("auto", torch.device("cpu")) == want
    keys, q = _tied_data(40, 300, seed=9)
    index = HammingIndex(keys, 40)
    assert index.backend == want
    _check(index.search(q, 20), _brute(q, keys, 40, 20))
