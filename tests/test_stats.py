import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from bagofdims import stats


def test_auc_matches_sklearn_with_heavy_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (500, 6), generator=g).float()  # only 4 distinct values
    labels = torch.rand(500, generator=g) < 0.3
    got = stats.auc(scores, labels)
    want = [roc_auc_score(labels.numpy(), scores[:, j].numpy()) for j in range(6)]
    assert got.shape == (6,)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12)
    assert stats.auc(scores[:, 0], labels) == pytest.approx(want[0], abs=1e-12)


def test_auc_per_column_labels_and_missing_class():
    scores = torch.tensor([[0.1, 1.0], [0.4, 2.0], [0.35, 3.0], [0.8, 4.0]])
    labels = torch.tensor([[False, True], [False, True], [True, True], [True, True]])
    out = stats.auc(scores, labels)
    assert out[0].item() == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))
    assert math.isnan(out[1].item())
    with pytest.raises(ValueError, match="both positive and negative"):
        stats.auc(torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        stats.auc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


def test_masked_auc_matches_sklearn_per_column():
    """Columns with different masks, positive counts (one with none, one all positive) and
    heavy ties: each equals sklearn on the column's masked rows."""
    g = torch.Generator().manual_seed(3)
    n, k = 400, 7
    scores = torch.randint(0, 5, (n, k), generator=g).float()
    labels = torch.rand(n, k, generator=g) < torch.tensor([0.02, 0.1, 0.3, 0.5, 0.9, 0.0, 1.0])
    mask = torch.rand(n, k, generator=g) < 0.8
    got = stats.masked_auc(scores, labels, mask)
    for j in range(k):
        y, x = labels[mask[:, j], j], scores[mask[:, j], j]
        if y.all() or not y.any():
            assert math.isnan(got[j].item())
        else:
            assert got[j].item() == pytest.approx(roc_auc_score(y.numpy(), x.numpy()), abs=1e-12)


def test_binary_auc_equals_rank_auc_of_binary_score():
    g = torch.Generator().manual_seed(1)
    bits = (torch.rand(400, 5, generator=g) < torch.linspace(0.1, 0.9, 5)).float()
    labels = torch.rand(400, generator=g) < 0.4
    closed = stats.binary_auc(bits[labels].mean(0), bits[~labels].mean(0))
    assert torch.allclose(closed, stats.auc(bits, labels), atol=1e-12)
    assert stats.binary_auc(torch.tensor(1.0), torch.tensor(0.0)).item() == 1.0


def test_topk_agreement():
    pred = torch.tensor([[3, 1, 2], [0, 5, 6], [7, 8, 9], [4, 4, 1]])
    target = torch.tensor([2, 0, 1, 1])
    assert stats.topk_agreement(pred, target) == 0.75
    assert stats.topk_agreement_at(pred, target, [1, 2, 3]) == {1: 0.25, 2: 0.25, 3: 0.75}
    with pytest.raises(ValueError, match="k=4"):
        stats.topk_agreement_at(pred, target, [4])
    with pytest.raises(ValueError, match="zero rows"):
        stats.topk_agreement(pred[:0], target[:0])


def _mi_brute(x):
    s = (x > 0).long()
    n, d = s.shape
    out = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            for a in (0, 1):
                for b in (0, 1):
                    pab = ((s[:, i] == a) & (s[:, j] == b)).double().mean()
                    pa, pb = (s[:, i] == a).double().mean(), (s[:, j] == b).double().mean()
                    if pab > 0:
                        out[i, j] += pab * torch.log2(pab / (pa * pb))
    return out


def test_sign_mi_matches_brute_force_including_constant_dim():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 5, generator=g)
    x[:, 4] = -1.0  # constant sign: zero cells must give 0, not NaN
    x[:, 3] = x[:, 0] * x[:, 1]
    mi = stats.sign_mutual_information(x)
    assert torch.allclose(mi, _mi_brute(x), atol=1e-12)
    assert mi[4].abs().max() == 0


def test_sign_mi_planted_pair_and_block_accumulation():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, 6, generator=g)
    x[:, 3] = 2 * x[:, 0]  # copied dim: MI = H(sign) ~ 1 bit
    mi = stats.sign_mutual_information(x)
    p = (x[:, 0] > 0).double().mean()
    h = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
    assert mi[0, 3].item() == pytest.approx(h.item(), abs=1e-9)
    assert mi[0, 3].item() > 0.99
    others = mi[[1, 2, 4, 5]][:, [1, 2, 4, 5]]
    assert others[~torch.eye(4, dtype=torch.bool)].max() < 1e-3
    assert torch.allclose(stats.sign_mutual_information(x, block_rows=777), mi, atol=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        stats.sign_mutual_information(x[:0])


def test_random_rotation_is_orthogonal_and_seeded():
    r = stats.random_rotation(16, seed=4, dtype=torch.float64)
    assert torch.allclose(r @ r.T, torch.eye(16, dtype=torch.float64), atol=1e-12)
    assert torch.equal(r, stats.random_rotation(16, seed=4, dtype=torch.float64))
    assert not torch.equal(r, stats.random_rotation(16, seed=5, dtype=torch.float64))


def test_mi_summary_rotation_control():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20000, 8, generator=g)
    x[:, 1] = x[:, 0]  # a dependent pair in the standard basis
    out = stats.mi_summary(x, seed=0)
    assert out["max_mi"] > 0.99
    assert out["max_mi_rotated"] < out["max_mi"]
    indep = stats.mi_summary(torch.randn(20000, 8, generator=g), seed=1)
    assert indep["mean_mi"] < 1e-3 and indep["mean_mi_rotated"] < 1e-3
    assert "mean_mi_rotated" not in stats.mi_summary(x, rotate_control=False)


def test_mi_is_finite_and_zero_for_constant_sign_dims():
    x = torch.randn(997, 6, generator=torch.Generator().manual_seed(3))
    x[:, 2] = 1.0  # always positive
    x[:, 4] = -3.0  # always negative
    mi = stats.sign_mutual_information(x)
    assert torch.isfinite(mi).all()
    assert mi[2].abs().max() == 0 and mi[:, 4].abs().max() == 0


def test_sign_collapse_matches_all_pairs_and_spots_constant_dims():
    g = torch.Generator().manual_seed(0)
    s = torch.where(torch.rand(40, 16, generator=g) > 0.5, 1, -1).to(torch.int8)
    s[:, :4] = 1  # four dims with one sign everywhere
    s[0, 4] = -1
    s[1:, 4] = 1  # 39 of 40 = 97.5% positive: constant at 0.95, not at 0.99
    pm = s.float()
    agree = (pm @ pm.T / 16 + 1) / 2
    want = float(agree[~torch.eye(40, dtype=torch.bool)].mean())
    got = stats.sign_collapse(s)
    assert got["pair_agreement"] == pytest.approx(want, abs=1e-6)
    assert got["constant_dims"] == pytest.approx(5 / 16)
    assert stats.sign_collapse(s, constant=0.99)["constant_dims"] == pytest.approx(4 / 16)
    same = s[:1].expand(5, -1)
    assert stats.sign_collapse(same)["pair_agreement"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        stats.sign_collapse(s[:1])


def test_bad_inputs_are_refused_with_the_fix():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    y = torch.tensor([0, 0, 1, 1])
    # probabilities as labels were cast to bool (every non-zero a positive)
    with pytest.raises(ValueError, match="bool or 0/1"):
        stats.auc(s, torch.tensor([0.1, 0.2, 0.9, 0.7]))
    with pytest.raises(ValueError, match="do not match"):
        stats.auc(s, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="do not match"):  # crashed inside expand_as before
        stats.auc(s, torch.tensor([0, 1, 1]), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask of shape"):
        stats.auc(s, y, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[n\] or \[n, k\]"):
        stats.auc(torch.rand(4, 2, 2), y)
    with pytest.raises(ValueError, match="NaN"):
        stats.auc(torch.tensor([0.1, float("nan"), 0.3, 0.5]), y, mask=torch.ones(4, dtype=torch.bool))
    assert stats.auc(s, y) == stats.auc(s, y.bool()) == stats.auc(s, y.float())
    with pytest.raises(ValueError, match=r"rates in \[0, 1\]"):
        stats.binary_auc(torch.tensor([0.2, float("nan")]), torch.tensor([0.1, 0.1]))
    with pytest.raises(ValueError, match=r"rates in \[0, 1\]"):
        stats.binary_auc(torch.tensor(1.5), torch.tensor(0.1))
    pred = torch.tensor([[3, 1, 2], [0, 5, 6]])
    with pytest.raises(TypeError, match="each k must be an int"):  # k=2.5 meant top-3
        stats.topk_agreement_at(pred, torch.tensor([2, 0]), [2.5])
    with pytest.raises(ValueError, match="block_rows"):
        stats.sign_mutual_information(torch.randn(10, 3), block_rows=0)
    with pytest.raises(ValueError, match=r"\[n, d >= 2\]"):
        stats.mi_summary(torch.randn(10))
    with pytest.raises(ValueError, match="must be ±1"):  # raw values gave a wrong agreement
        stats.sign_collapse(torch.randn(10, 4))
    with pytest.raises(ValueError, match="constant"):
        stats.sign_collapse(torch.ones(3, 4), constant=0.3)
    with pytest.raises(ValueError, match="d must be >= 1"):
        stats.random_rotation(0)
