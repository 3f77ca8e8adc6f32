import numpy as np
import pytest
import torch

from bagofdims.signs import bits, hamming


def _ref_agreement(x, y):
    return ((x > 0)[:, None, :] == (y > 0)[None, :, :]).sum(-1)


def _ref_topk(agree, k, largest=True):
    """Top-k by agreement, ties broken by the lowest key index."""
    m = agree.shape[1]
    score = agree.long() if largest else -agree.long()
    return (score * (2 * m) - torch.arange(m)).topk(k, dim=1).indices


@pytest.mark.parametrize("d", [1, 7, 8, 13, 64, 100])
def test_pack_matches_numpy_little_bitorder(d):
    x = torch.randn(4, 3, d, generator=torch.Generator().manual_seed(d))
    x[0, 0, 0] = 0.0  # zero packs as 0 (value > 0 is the rule)
    packed = bits.pack_signs(x)
    assert packed.dtype == torch.uint8 and packed.shape == (4, 3, (d + 7) // 8)
    assert np.array_equal(packed.numpy(), np.packbits(x.numpy() > 0, axis=-1, bitorder="little"))
    assert torch.equal(bits.unpack_signs(packed, d), torch.where(x > 0, 1, -1).to(torch.int8))
    assert torch.equal(bits.unpack_signs(packed, d, torch.float32), torch.where(x > 0, 1.0, -1.0))


def test_bit_order_explicit_and_edge_cases():
    x = torch.tensor([[1.0, -1, -1, -1, -1, -1, -1, -1, 2.0]])  # bits 0 and 8
    assert bits.pack_signs(x).tolist() == [[1, 1]]
    assert bits.pack_signs(torch.zeros(0, 5)).shape == (0, 1)
    with pytest.raises(ValueError, match="nan_to_num"):
        bits.pack_signs(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="needs 2"):
        bits.unpack_signs(torch.zeros(3, 1, dtype=torch.uint8), 13)


def test_popcount_uint8_and_int64():
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(bits.popcount(u8).long(), torch.tensor([bin(i).count("1") for i in range(256)]))
    vals = [0, 1, -1, 2**62 + 5, -(2**40), 123456789]
    got = bits.popcount(torch.tensor(vals, dtype=torch.int64)).tolist()
    assert got == [bin(v & (2**64 - 1)).count("1") for v in vals]
    with pytest.raises(TypeError):
        bits.popcount(torch.ones(3))


@pytest.mark.parametrize("d", [5, 13, 64, 131])
def test_agreement_kernels_match_reference_and_ignore_padding(d):
    g = torch.Generator().manual_seed(d)
    x, y = torch.randn(9, d, generator=g), torch.randn(11, d, generator=g)
    a, b = bits.pack_signs(x), bits.pack_signs(y)
    ref = _ref_agreement(x, y)
    if d % 8:
        b[:, -1] |= 0xFF << (d % 8) & 0xFF  # garbage in the padding bits must not count
    for fn in (bits.agreement, bits.agreement_popcount):
        out = fn(a, b, d)
        assert out.dtype == torch.int32 and torch.equal(out.long(), ref)


def test_matmul_dtypes_are_exact():
    """The GPU path uses fp16 ±1 products; check that arithmetic on CPU against popcount."""
    g = torch.Generator().manual_seed(0)
    d = 2048  # the largest width the fp16 path is used for
    a = torch.randint(0, 256, (6, d // 8), dtype=torch.uint8, generator=g)
    a[0] = 255  # extreme rows: agreement d and 0
    b = torch.cat([a[:1], ~a[:1], torch.randint(0, 256, (7, d // 8), dtype=torch.uint8, generator=g)])
    ref = bits.agreement_popcount(a, b, d)
    for dt in (torch.float16, torch.float32):  # fp16: the CUDA choice, fp32: the CPU one
        dots = bits._dots(bits.unpack_signs(a, d, dt), bits.unpack_signs(b, d, dt))
        assert dots.dtype == dt
        assert torch.equal(((dots.float() + d) / 2).int(), ref)
    assert ref[0, 0] == d and ref[0, 1] == 0


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("d,n,m,k,chunk", [
    (13, 7, 9, 4, None), (576, 40, 5000, 100, None), (576, 40, 5000, 100, 777),
    (64, 30, 3000, 1, 50), (100, 5, 200, 200, 64),
])
def test_hamming_topk_exact_with_ties(largest, d, n, m, k, chunk):
    g = torch.Generator().manual_seed(d + m)
    q = torch.randint(0, 256, (n, (d + 7) // 8), dtype=torch.uint8, generator=g)
    keys = torch.randint(0, 256, (m, (d + 7) // 8), dtype=torch.uint8, generator=g)
    keys[m // 2 : m // 2 + 10] = keys[3]  # exact duplicates: ties resolved by lowest index
    keys[m // 3] = q[0]  # an exact match
    agree = bits.agreement_popcount(q, keys, d)
    vals, idx = hamming.hamming_topk(q, keys, d, k, chunk=chunk, largest=largest)
    want = _ref_topk(agree, k, largest)
    assert vals.dtype == torch.int32 and idx.dtype == torch.int64
    assert torch.equal(idx, want)
    assert torch.equal(vals, agree.gather(1, want))
    if largest:
        assert vals[0, 0] == d and idx[0, 0] == m // 3


def test_hamming_topk_errors_and_empty():
    q = torch.zeros(3, 2, dtype=torch.uint8)
    keys = torch.zeros(5, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="k=6"):
        hamming.hamming_topk(q, keys, 16, 6)
    with pytest.raises(ValueError, match="needs 3"):
        hamming.hamming_topk(q, keys, 24, 1)
    with pytest.raises(TypeError, match="uint8"):
        hamming.hamming_topk(q.float(), keys, 16, 1)
    v, i = hamming.hamming_topk(q[:0], keys, 16, 2)
    assert v.shape == (0, 2) and i.shape == (0, 2)


def test_hamming_topk_faiss_backend_same_values():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(7)
    d = 100
    q = torch.randint(0, 256, (20, 13), dtype=torch.uint8, generator=g)
    keys = torch.randint(0, 256, (500, 13), dtype=torch.uint8, generator=g)
    vals, _ = hamming.hamming_topk(q, keys, d, 10)
    fv, fi = hamming.hamming_topk(q, keys, d, 10, backend="faiss")
    assert torch.equal(fv, vals)  # padding bits (random here) are masked before faiss
    assert torch.equal(bits.agreement_popcount(q, keys, d).gather(1, fi), fv)


def test_feature_scores_and_masked_agreement():
    g = torch.Generator().manual_seed(11)
    d, n = 37, 50
    feats = [([0, 5, 36], [1, -1, 1]), ([3], [-1]), (torch.arange(0, 37, 2), torch.ones(19))]
    w = bits.feature_matrix(feats, d)
    assert w.shape == (d, 3) and w[5, 0] == -1 and w[3, 1] == -1 and w[1, 0] == 0
    x = torch.randn(n, d, generator=g)
    ref = torch.stack([((x[:, torch.as_tensor(di)] > 0) == (torch.as_tensor(si) > 0)).float().mean(1)
                       for di, si in feats], 1)
    assert torch.allclose(bits.feature_scores(x, w), ref, atol=1e-6)
    packed = bits.pack_signs(x)
    assert torch.allclose(bits.feature_scores(packed, w), ref, atol=1e-6)
    masks, patterns = bits.feature_masks(w)
    counts = bits.masked_agreement(packed, masks, patterns, d)
    assert counts.dtype == torch.int32
    assert torch.equal(counts, (ref * torch.tensor([3.0, 1.0, 19.0])).round().int())


def test_feature_matrix_validation():
    with pytest.raises(ValueError, match="twice"):
        bits.feature_matrix([([1, 1], [1, 1])], 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        bits.feature_matrix([([4], [1])], 4)
    with pytest.raises(ValueError, match="\\+1 or -1"):
        bits.feature_matrix([([0], [0])], 4)
    with pytest.raises(ValueError, match="2 dims but 1"):
        bits.feature_matrix([([0, 1], [1])], 4)
    assert bits.feature_matrix([], 4).shape == (4, 0)
