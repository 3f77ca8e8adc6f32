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


@pytest.mark.parametrize("d", [576, 575, 640, 1030])
@pytest.mark.parametrize("largest", [True, False])
def test_near_duplicates_beyond_the_bf16_exact_range(d, largest):
    """Agreements near d (|dot| > 510) are rounded in bf16: the fp32 fallback keeps them exact."""
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
        vals, idx = hamming_topk(q, keys, d, k, largest=largest)
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
    index = HammingIndex(keys, d)
    a1, i1 = index.search(q, 30)
    a2, i2 = index.search(q, 30)  # the index is reusable
    a3, i3 = hamming_topk(q, keys, d, 30, chunk=999)  # merged chunk results
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
