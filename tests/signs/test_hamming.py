import threading

import numpy as np
import pytest
import torch

from bagofdims.signs import bits
from bagofdims.signs.hamming import HammingIndex, hamming_topk


def _ref_topk(agree, k, largest=True):
    """Top-k by agreement, ties broken by the lowest key index."""
    m = agree.shape[1]
    score = agree.long() if largest else -agree.long()
    return (score * (2 * m) - torch.arange(m)).topk(k, dim=1).indices


def _flip(row: torch.Tensor, n_bits: int, d: int, g) -> torch.Tensor:
    """A copy of a packed row with n_bits of its first d bits flipped."""
    pm = bits.unpack_signs(row[None], d, torch.int8)[0]
    pos = torch.randperm(d, generator=g)[:n_bits]
    pm[pos] = -pm[pos]
    return bits.pack_signs(pm.float())


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("d", [576, 575, 640, 1030])
@pytest.mark.parametrize("largest", [True, False])
def test_near_duplicates_beyond_the_bf16_exact_range(d, largest, backend):
    """Agreements near d (|dot| > 510) are rounded in bf16: torch recounts them exactly."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(d)
    nb = (d + 7) // 8
    q = bits.pack_signs(torch.randn(12, d, generator=g))
    keys = bits.pack_signs(torch.randn(3000, d, generator=g))
    # for each query, keys at Hamming distance 0..(2 per step) from it (or from its complement)
    src = q if largest else (~q) & bits.tail_mask(d, q.device)
    near = torch.stack([_flip(src[i % len(q)], j, d, g) for i in range(len(q)) for j in (0, 1, 2, 3, 5, 7, 9)])
    keys = torch.cat([keys[:1000], near, keys[1000:]])
    assert keys.shape[1] == nb
    agree = bits.agreement_popcount(q, keys, d)
    for k in (1, 5, 40):
        vals, idx = hamming_topk(q, keys, d, k, largest=largest, backend=backend)
        want = _ref_topk(agree, k, largest)
        assert torch.equal(idx, want)
        assert torch.equal(vals, agree.gather(1, want))
    if largest:
        assert int(vals[:, 0].min()) == d  # every query finds its exact copy


def test_index_reuse_matches_one_shot_and_chunks():
    g = torch.Generator().manual_seed(3)
    d = 301
    q = torch.randint(0, 256, (50, 38), dtype=torch.uint8, generator=g)
    keys = torch.randint(0, 256, (4000, 38), dtype=torch.uint8, generator=g)
    keys[100:120] = keys[7]  # duplicated keys: ties go to the lowest index
    index = HammingIndex(keys, d, backend="torch")
    a1, i1 = index.search(q, 30)
    a2, i2 = index.search(q, 30)  # the index is reusable
    a3, i3 = hamming_topk(q, keys, d, 30, chunk=999, backend="torch")  # merged chunk results
    assert torch.equal(i1, i2) and torch.equal(i1, i3) and torch.equal(a1, a3)
    agree = bits.agreement_popcount(q, keys, d)
    assert torch.equal(i1, _ref_topk(agree, 30))
    assert len(index) == 4000
    # the score buffer kept between searches serves fewer queries, then the smallest side
    a4, i4 = index.search(q[3:8], 30)
    assert torch.equal(i4, i1[3:8]) and torch.equal(a4, a1[3:8])
    a5, i5 = index.search(q[:9], 30, largest=False)
    assert torch.equal(i5, _ref_topk(-agree[:9], 30)) and torch.equal(a5, agree[:9].gather(1, i5))


def test_index_errors():
    keys = torch.zeros(5, 2, dtype=torch.uint8)
    index = HammingIndex(keys, 16)
    with pytest.raises(ValueError, match="k=6"):
        index.search(torch.zeros(1, 2, dtype=torch.uint8), 6)
    with pytest.raises(ValueError, match="needs 3"):
        HammingIndex(keys, 24)
    with pytest.raises(TypeError, match="uint8"):
        index.search(torch.zeros(1, 2), 1)
    with pytest.raises(ValueError, match="backend"):
        hamming_topk(keys, keys, 16, 1, backend="annoy")
    v, i = index.search(keys[:0], 2)
    assert v.shape == (0, 2) and i.shape == (0, 2)


def test_concurrent_searches_equal_single_threaded_results():
    """8 threads searching one index at once (mixed sizes, both directions) get the results of
    one search at a time: each search has a score buffer of its own."""
    g = torch.Generator().manual_seed(11)
    d = 63  # odd width: the padded column must stay right in the lazily built negated keys
    keys = bits.pack_signs(torch.randn(3000, d, generator=g))
    jobs = [(i, n, largest) for i, n in zip(range(0, 2400, 30), [1, 7, 30, 3] * 20)
            for largest in (True, False)]
    want = {job: HammingIndex(keys, d, backend="torch").search(keys[job[0]:job[0] + job[1]], 8, job[2])
            for job in jobs}
    for i, n, _ in jobs[::2]:  # sanity: each token finds itself first
        assert torch.equal(want[(i, n, True)][1][:, 0], torch.arange(i, i + n))
    index = HammingIndex(keys, d, backend="torch")  # fresh: negated keys, buffers built under contention
    start = threading.Barrier(8)
    wrong: list = []

    def worker(t: int) -> None:
        start.wait()
        for r in range(4):
            for job in jobs[t::3] + jobs[::-5]:
                i, n, largest = job
                got = index.search(keys[i:i + n], 8, largest)
                if not (torch.equal(got[0], want[job][0]) and torch.equal(got[1], want[job][1])):
                    wrong.append((t, r, job))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []
    assert len(index._pool) <= 8  # idle buffers kept: at most one per concurrent search


def test_k_must_be_a_whole_number():
    keys = torch.zeros(5, 2, dtype=torch.uint8)
    index = HammingIndex(keys, 16)
    q = torch.zeros(1, 2, dtype=torch.uint8)
    for bad in (2.0, 2.5, True, "2"):
        with pytest.raises(TypeError, match="k must be an int"):
            index.search(q, bad)
        with pytest.raises(TypeError, match="k must be an int"):
            hamming_topk(q, keys, 16, bad)
    assert index.search(q, np.int64(2))[1].shape == (1, 2)  # numpy ints are fine
