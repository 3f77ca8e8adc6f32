"""Figure-8 / sphere recovery and antipodal pairs: planted structures found, shuffles not."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bagofdims.errors import InvalidArgument
from superposition.antipodal import exclusive_word_pairs, pair_cosines, planted_pairs, word_pairs
from superposition.manifolds import ManifoldConfig, recovery, run_manifolds
from superposition.synthetic import SyntheticConfig, feature_points, sample


def test_recovery_of_exact_and_scrambled_geometry():
    pts = feature_points("figure8", 24).numpy()
    exact = recovery(np.vstack([pts.T, np.ones((1, 24))]), pts, n_shuffles=50)   # W columns = points (+ offset)
    assert exact["knn"]["value"] > 0.9 and exact["knn"]["value"] > exact["knn"]["shuffled_q95"]
    assert exact["procrustes"]["value"] > 0.5 > exact["procrustes"]["shuffled_mean"]
    rng = np.random.default_rng(0)
    random_w = rng.normal(size=(8, 24))
    rnd = recovery(random_w, pts, n_shuffles=50)
    assert rnd["knn"]["p"] > 0.05 and rnd["spearman"]["p"] > 0.05


def test_figure8_quick_run_beats_its_shuffled_control():
    metrics, arrays = run_manifolds(ManifoldConfig(structures="figure8", features=20, latent=20,
                                                   weight_decay="6", steps=400, width=0.4, shuffles=50))
    r = metrics["runs"][0]
    assert r["knn"]["value"] > r["knn"]["shuffled_q95"] and r["knn"]["p"] < 0.05
    assert r["procrustes"]["value"] > r["procrustes"]["shuffled_q95"]
    assert arrays["figure8"][1][6.0].shape == (20, 20)


def test_pairs_sampler_never_fires_both_members():
    x = sample(SyntheticConfig(structure="pairs", features=10, p_max=0.7), 2000, torch.Generator().manual_seed(0))
    pairs = x.reshape(2000, 5, 2)
    assert pairs.sum(2).max() == 1 and 0.6 < pairs.sum(2).mean() < 0.8
    with pytest.raises(InvalidArgument, match="even"):
        sample(SyntheticConfig(structure="pairs", features=9), 10, torch.Generator())


def test_planted_exclusive_pairs_are_stored_antipodally():
    metrics, W = planted_pairs(features=12, latent=6, p_active=0.5, weight_decay="0.1", steps=800)
    run = metrics["runs"][0]
    assert run["planted"]["mean_cos"] < -0.9 and run["planted"]["frac_below_-0.9"] == 1.0
    assert abs(run["other_pairs"]["mean_cos"]) < 0.2
    inside, other = pair_cosines(W[0, :6], np.arange(12).reshape(-1, 2))
    assert len(inside) == 6 and len(other) == 66 - 6


def test_never_cooccurring_word_pairs_are_found():
    rng = np.random.default_rng(0)
    x = (rng.random((500, 4)) < 0.4).astype(np.float32)
    x[x[:, 0] > 0, 1] = 0                    # words 0 and 1 never share a window
    X = sp.csr_matrix(x)
    never, other = exclusive_word_pairs(X, [0, 1, 2, 3], min_expected=5)
    assert never.tolist() == [[0, 1]] and len(other) == 5
    W = np.array([[1.0, -1.0, 0.3, 0.0], [0.0, 0.0, 1.0, 1.0]])   # words 0, 1 antipodal
    res = word_pairs(W, X, [0, 1, 2, 3], ["a", "b", "c", "d"])
    assert res["never"]["mean_cos"] == pytest.approx(-1.0) and res["most_antipodal"][0][:2] == ["a", "b"]
    with pytest.raises(InvalidArgument):
        exclusive_word_pairs(X, [0, 1], min_expected=0)
