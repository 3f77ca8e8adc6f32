import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from superposition import geometry as G
from superposition.synthetic import SyntheticConfig, sample, train_sweep


def _ring_data(n_feat=12, n=4000, seed=0):
    """Windows where neighbouring features on a circle co-occur."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    phi = np.arange(n_feat) * 2 * np.pi / n_feat
    p = 0.6 * np.exp(2 * (np.cos(theta[:, None] - phi[None, :]) - 1))
    return sp.csr_matrix((rng.random(p.shape) < p).astype(np.float32))


def test_ring_order_score_on_planted_ring_and_shuffle():
    t = np.arange(12) * 2 * np.pi / 12
    ring = np.stack([np.cos(t), np.sin(t)], 1)
    assert G.ring_order_score(ring) == 1.0
    assert G.ring_order_score(ring[::-1]) == 1.0
    shuffled = ring[np.random.default_rng(0).permutation(12)]
    assert G.ring_order_score(shuffled) < 0.5


def test_data_cooccurrence_pca_finds_ring():
    X = _ring_data()
    phi = G.cooccurrence(X, np.arange(12))["phi"]
    coords, _, _ = G.pca_2d(phi)
    assert G.ring_order_score(coords) == 1.0
    assert phi[0, 1] > 0 > phi[0, 6]


def test_spearman_gram_and_rank_on_planted_weights():
    X = _ring_data()
    t = np.arange(12) * 2 * np.pi / 12
    W = torch.tensor(np.stack([np.cos(t), np.sin(t)]), dtype=torch.float32)  # cos(w_i,w_j) follows the ring
    assert G.spearman_cos_cooc(W, X, np.arange(12)) > 0.8
    rng_W = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    assert G.spearman_cos_cooc(rng_W, X, np.arange(12)) < G.spearman_cos_cooc(W, X, np.arange(12))
    cov = np.cov(X.toarray().T)
    assert G.gram_cov_corr(W, cov) > 0.9
    assert abs(G.effective_rank(torch.eye(5)) - 5) < 1e-9
    assert G.effective_rank(torch.outer(torch.ones(5), torch.arange(1.0, 4))) < 1.01


def test_cluster_metrics_separate_planted_clusters():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 3
    v = np.repeat(centers, 10, axis=0) + rng.normal(size=(30, 16)) * 0.3
    labels = np.repeat(["a", "b", "c"], 10)
    assert G.knn_purity(v, labels) == 1.0 and G.silhouette(v, labels) > 0.7
    perm = rng.permutation(labels)
    assert G.knn_purity(v, perm) < 0.6 and G.silhouette(v, perm) < 0.1


def test_linear_decoder_r2_linear_vs_nonlinear_target():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3000, 4))
    x = np.stack([h[:, 0] * 2 + 0.1 * rng.normal(size=3000), np.abs(h[:, 1])], 1)
    r2 = G.linear_decoder_r2(h[:2000], x[:2000], h[2000:], x[2000:])
    assert r2[0] > 0.95 and r2[1] < 0.05


def test_preactivation_parts_and_group_interference():
    W = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]])
    b = torch.tensor([-1.2, 0.0, 0.0])
    X = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    parts = G.preactivation_parts(W, b, X, 0)
    assert np.allclose(parts["self"], [1, 1, 0]) and np.allclose(parts["interference"], [0, 0.5, 0.5])
    total = parts["bias"] + parts["self"] + parts["interference"]
    assert (total > 0).tolist() == [False, True, False]  # constructive only with the related word
    assert math.isclose(G.group_interference(W, [0, 2]), 0.0, abs_tol=1e-9)
    assert G.group_interference(W, [0, 1]) > 0


def test_synthetic_sweep_strong_decay_matches_covariance():
    # the paper's comparison: wd 1 vs 6 at m 8, both model kinds
    cfg = SyntheticConfig(latent="8", weight_decay="1,6", models="linear,relu", steps=600, batch_size=256)
    specs, W, cov = train_sweep(cfg)
    for weak, strong in (specs[0:2], specs[2:4]):
        assert (weak["weight_decay"], strong["weight_decay"]) == (1.0, 6.0)
        assert strong["gram_cov_corr"] > 0.95
        assert weak["gram_cov_corr"] < 0.7
        assert strong["weight_norm_sq"] < weak["weight_norm_sq"]
    x = sample(cfg, 2000, torch.Generator().manual_seed(0))
    c = torch.corrcoef(x.T)
    assert c[0, 1] > 0.1 and c[0, 6] < 0  # neighbours co-fire, opposites do not
    with pytest.raises(ValueError):
        sample(SyntheticConfig(structure="torus"), 10, torch.Generator())
