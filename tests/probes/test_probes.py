import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from probes import (
    LogisticProbe,
    MLPProbe,
    axis_alignment,
    cross_validate,
    mass_on_dims,
    rank_auc,
    sign_agreement,
)


def planted(
    n=3000, d=48, k=3, n_pos=150, n_dims=8, delta=1.6, seed=0, signs_only=False
):
    """Gaussian rows; category j's positives get +delta * sign on its own dims."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    Y = torch.zeros(n, k, dtype=torch.bool)
    dims = torch.stack([torch.randperm(d, generator=g)[:n_dims] for _ in range(k)])
    sgn = torch.randint(0, 2, (k, n_dims), generator=g) * 2 - 1
    for j in range(k):
        rows = torch.randperm(n, generator=g)[:n_pos]
        Y[rows, j] = True
        X[rows[:, None], dims[j]] += delta * sgn[j]
    if signs_only:
        X = torch.sign(X)
    return X, Y, dims, sgn


# ---------------------------------------------------------------------------- AUC
def test_rank_auc_matches_sklearn_with_ties_and_masks():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 6, (300, 4), generator=g).float()  # heavy ties
    y = torch.rand(300, 4, generator=g) < 0.3
    m = torch.rand(300, 4, generator=g) < 0.7
    ours = rank_auc(s, y, m)
    for j in range(4):
        ref = roc_auc_score(y[m[:, j], j].numpy(), s[m[:, j], j].numpy())
        assert ours[j].item() == pytest.approx(ref, abs=1e-12)
    one_class = rank_auc(s, torch.zeros_like(y))
    assert torch.isnan(one_class).all()


# ------------------------------------------------------------------ logistic probe
def test_planted_axis_signal_is_recovered():
    X, Y, dims, sgn = planted(n=4000, k=3)
    tr = torch.arange(4000) < 2500
    p = LogisticProbe(l2=1e-3).fit(X[tr], Y[tr])
    auc = p.auc(X[~tr], Y[~tr])
    assert (auc > 0.99).all(), auc
    agree = sign_agreement(p.weights, list(dims), list(sgn))
    assert (agree > 0.95).all(), agree
    mass = mass_on_dims(p.weights_std, list(dims))
    assert (mass > 3 * dims.shape[1] / X.shape[1]).all(), mass  # far above chance
    assert p.converged_.all()


def test_pure_noise_gives_chance_auc():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(3000, 32, generator=g)
    y = torch.rand(3000, generator=g) < 0.05
    p = LogisticProbe(l2=1e-2).fit(X, y)
    Xt = torch.randn(6000, 32, generator=g)
    yt = torch.arange(6000) % 2 == 0  # 3000 / 3000: AUC std ~0.0075 under the null
    assert abs(p.auc(Xt, yt).item() - 0.5) < 0.05


def test_logits_in_input_units_and_signs_input():
    X, Y, _, _ = planted(n=1500, k=2, signs_only=True)
    X8 = X.to(torch.int8)
    p = LogisticProbe().fit(X8, Y)
    logits = X @ p.weights + p.bias
    torch.testing.assert_close(logits, p.decision_function(X8), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        p.predict_proba(X), torch.sigmoid(logits), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(p.weights * p.scale_[:, None], p.weights_std)


def test_batched_equals_each_alone():
    X, Y, _, _ = planted(n=2000, k=4, seed=3)
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(2000, 4, generator=g) < 0.8  # each column also on its own rows
    batched = LogisticProbe(l2=3e-3, tol=1e-6).fit(X, Y, mask=mask)
    for j in range(4):
        alone = LogisticProbe(l2=3e-3, tol=1e-6).fit(X, Y[:, j], mask=mask[:, j])
        torch.testing.assert_close(
            batched.weights_std[:, j], alone.weights_std, atol=2e-4, rtol=1e-3
        )
        assert abs(batched.bias_std[j].item() - alone.bias_std.item()) < 2e-4


@pytest.mark.parametrize("balanced", [True, False])
def test_matches_sklearn(balanced):
    X, Y, _, _ = planted(n=1200, d=20, k=2, n_pos=100, delta=0.8, seed=5)
    l2 = 1e-2
    p = LogisticProbe(l2=l2, balanced=balanced, tol=1e-7).fit(X, Y)
    Xs = StandardScaler().fit_transform(X.double().numpy())
    for j in range(2):
        sk = LogisticRegression(
            C=1.0 / (l2 * X.shape[0]),
            class_weight="balanced" if balanced else None,
            tol=1e-10,
            max_iter=10_000,
        ).fit(Xs, Y[:, j].numpy())
        np.testing.assert_allclose(
            p.weights_std[:, j].numpy(), sk.coef_[0], atol=1e-4, rtol=1e-3
        )
        assert abs(p.bias_std[j].item() - sk.intercept_[0]) < 1e-4
        assert (
            abs(
                p.auc(X, Y)[j].item()
                - roc_auc_score(Y[:, j].numpy(), sk.decision_function(Xs))
            )
            < 1e-3
        )
    assert p.sklearn_C() == pytest.approx(1.0 / (l2 * X.shape[0]))


def test_clear_errors():
    X, Y, _, _ = planted(n=300, k=2)
    with pytest.raises(ValueError, match="rows"):
        LogisticProbe().fit(X, Y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        LogisticProbe().fit(X[0], Y)
    with pytest.raises(ValueError, match="single class"):
        LogisticProbe().fit(X, torch.zeros(300, 2))
    with pytest.raises(
        ValueError, match="single class"
    ):  # a mask can also leave one class only
        LogisticProbe().fit(X, Y[:, 0], mask=~Y[:, 0])
    with pytest.raises(ValueError, match="0/1"):
        LogisticProbe().fit(X, Y.float() * 2)
    Xn = X.clone()
    Xn[7, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        LogisticProbe().fit(Xn, Y)
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticProbe().decision_function(X)
    p = LogisticProbe().fit(X, Y)
    with pytest.raises(ValueError, match="dims"):
        p.decision_function(X[:, :10])
    with pytest.raises(ValueError, match="columns"):
        p.auc(X, Y[:, 0:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, Y, _, _ = planted(n=2000, k=3)
    cpu = LogisticProbe(tol=1e-6).fit(X, Y)
    gpu = LogisticProbe(tol=1e-6).fit(X.cuda(), Y.cuda())
    assert gpu.weights.is_cuda
    torch.testing.assert_close(
        gpu.weights_std.cpu(), cpu.weights_std, atol=1e-3, rtol=1e-2
    )


# ------------------------------------------------------------------ cross-validation
def test_cross_validate_held_out_protocol():
    X, Y, _, _ = planted(n=3000, k=3, n_pos=120, seed=6)
    anchors = [Y[:, j].nonzero().flatten()[:50].tolist() for j in range(3)]
    held = [Y[:, j].nonzero().flatten()[50:].tolist() for j in range(3)]
    names = ["a", "b", "c"]
    res = cross_validate(X, dict(zip(names, anchors)), dict(zip(names, held)), folds=4)
    assert res.names == names
    for j in range(3):
        assert not res.tested[anchors[j], j].any()  # anchors are training-only
        assert res.tested[held[j], j].all()  # every held-out member scored once
        assert res.n_test_pos[j] == len(held[j])
        # negatives: the rest of the vocabulary, every one tested exactly once over the folds
        assert res.n_test_neg[j] == 3000 - Y[:, j].sum()
    assert (res.auc > 0.99).all(), res.auc
    assert res.fold_auc.shape == (4, 3)
    ref = roc_auc_score(
        res.labels[res.tested[:, 0], 0].numpy(), res.scores[res.tested[:, 0], 0].numpy()
    )
    assert res.auc[0].item() == pytest.approx(ref, abs=1e-9)


def test_cross_validate_plain_kfold_and_errors():
    X, Y, _, _ = planted(n=1500, k=2, n_pos=60, seed=7)
    pos = [Y[:, j].nonzero().flatten() for j in range(2)]
    res = cross_validate(X, pos, folds=3, keep_probes=True)
    assert len(res.probes) == 3
    assert all(res.tested[pos[j], j].all() for j in range(2))
    assert (res.auc > 0.95).all()
    with pytest.raises(ValueError, match="both anchors and held-out"):
        cross_validate(X, [[1, 2, 3]], [[3, 4]])
    with pytest.raises(ValueError, match="outside"):
        cross_validate(X, [[1, 2, 99_999]])
    with pytest.raises(ValueError, match="categories"):
        cross_validate(X, [[1, 2], [3, 4]], [[5, 6]])


# ------------------------------------------------------------------------- MLP probe
def test_mlp_recovers_planted_signal_and_gradients_are_exact():
    X, Y, dims, sgn = planted(n=3000, d=32, k=2, n_pos=200, delta=1.5, seed=8)
    tr = torch.arange(3000) < 2000
    m = MLPProbe(hidden=8, lr=3e-3, batch_size=500, max_epochs=40, patience=4).fit(
        X[tr], Y[tr]
    )
    assert (m.auc(X[~tr], Y[~tr]) > 0.97).all()
    g = m.input_gradients(X[~tr])
    assert (sign_agreement(g, list(dims), list(sgn)) > 0.95).all()
    # Closed-form mean gradient equals autograd's.
    Xr = X[~tr].clone().requires_grad_(True)
    W1, b1, w2, b2 = m.params_
    Z = (Xr - m._std.mean) / m._std.scale
    logits, _ = m._forward(Z, [W1, b1, w2, b2])
    for j in range(2):
        (gx,) = torch.autograd.grad(logits[:, j].sum(), Xr, retain_graph=True)
        torch.testing.assert_close(g[:, j], gx.mean(0), atol=1e-5, rtol=1e-4)
    al = axis_alignment(m, list(dims), list(sgn), X=X[~tr])
    assert (al.mass_on_dims > al.chance_mass).all()
    with pytest.raises(ValueError, match="pass X"):
        axis_alignment(m, list(dims), list(sgn))


def test_mlp_needs_validation_positives():
    X = torch.randn(100, 4)
    y = torch.zeros(100)
    y[0] = 1
    with pytest.raises(ValueError, match="val_fraction=0"):
        MLPProbe().fit(X, y)


# ------------------------------------------------------------------------ alignment
def test_alignment_measures_by_hand():
    w = torch.tensor([[1.0, -2.0], [-3.0, 0.0], [0.5, 4.0], [0.0, 1.0]])  # [d=4, k=2]
    dims = [[0, 1], [0, 2, 3]]
    signs = [[1, 1], [-1, 1, -1]]
    torch.testing.assert_close(
        sign_agreement(w, dims, signs), torch.tensor([0.5, 2 / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(
        mass_on_dims(w, dims), torch.tensor([4 / 4.5, 1.0], dtype=torch.float64)
    )
    dense = torch.zeros(4, 2)
    for j in range(2):
        dense[dims[j], j] = torch.tensor(signs[j], dtype=torch.float32)
    torch.testing.assert_close(sign_agreement(w, dense), sign_agreement(w, dims, signs))
    assert sign_agreement(w[:, 0], [0, 1], [True, False]).item() == 1.0
    al = axis_alignment(w, dims, signs)
    torch.testing.assert_close(
        al.chance_mass, torch.tensor([0.5, 0.75], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="signs"):
        sign_agreement(w, dims, [[1], [1, 1, 1]])
