"""Bias-corrected pairwise sign MI (Miller-Madow) and its shuffled-pairs null in bagofdims.stats."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from bagofdims import stats
from bagofdims.errors import InvalidArgument

LN2 = math.log(2)


def _direct(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Plug-in and Miller-Madow MI (bits) of every pair, one 2x2 table at a time."""
    s = (x > 0).numpy()
    n, d = s.shape
    plug, mm = np.zeros((d, d)), np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            plug[i, j] = mutual_info_score(s[:, i], s[:, j]) / LN2
            k_ab = len(set(zip(s[:, i], s[:, j])))
            k_a, k_b = len(set(s[:, i])), len(set(s[:, j]))
            mm[i, j] = plug[i, j] - (k_ab - k_a - k_b + 1) / (2 * n * LN2)
    return plug, mm


def test_miller_madow_matches_a_direct_per_pair_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(57, 7, generator=g)
    x[:, 6] = -1.0  # constant sign: K_a = 1
    x[:, 5] = x[:, 0] * x[:, 1]
    x[:3, 4] = 1.0  # a rare sign: some 2x2 cells empty
    x[3:, 4] = -1.0
    t = stats.sign_mi_tables(x)
    plug, mm = _direct(x)
    assert np.abs(t.plugin.numpy() - plug).max() < 1e-12
    assert np.abs(t.miller_madow.numpy() - mm).max() < 1e-12
    assert torch.equal(t.plugin, stats.sign_mutual_information(x))  # one count code, two names
    assert t.miller_madow[6].abs().max() == 0  # a constant-sign dim: exactly 0, corrected too
    torch.testing.assert_close(t.rate, (x > 0).double().mean(0))
    torch.testing.assert_close(t.both[0, 1], ((x[:, 0] > 0) & (x[:, 1] > 0)).double().mean())
    blocked = stats.sign_mi_tables(x, block_rows=10)
    assert torch.allclose(blocked.miller_madow, t.miller_madow, atol=1e-12)


def test_correction_brings_independent_signs_closer_to_zero():
    g = torch.Generator().manual_seed(1)
    n, d = 300, 12
    plug, mm = [], []
    for _ in range(20):
        x = (torch.rand(n, d, generator=g) < torch.linspace(0.2, 0.7, d)).float() - 0.5
        t = stats.sign_mi_tables(x)
        off = ~torch.eye(d, dtype=torch.bool)
        plug.append(t.plugin[off].mean().item())
        mm.append(t.miller_madow[off].mean().item())
    bias = 1 / (2 * n * LN2)
    assert np.mean(plug) == pytest.approx(bias, rel=0.2)  # the plug-in bias the correction removes
    assert abs(np.mean(mm)) < 0.1 * np.mean(plug)
    assert abs(np.mean(mm)) < abs(np.mean(plug))


def test_identical_columns_share_their_whole_entropy():
    g = torch.Generator().manual_seed(2)
    n = 800
    a = torch.randn(n, generator=g) + 0.4
    x = torch.stack([a, 3 * a, torch.randn(n, generator=g)], 1)
    t = stats.sign_mi_tables(x)
    p = (a > 0).double().mean().item()
    h = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert t.plugin[0, 1].item() == pytest.approx(h, abs=1e-12)
    # Miller-Madow MI of a copy is the Miller-Madow entropy: K_ab = K_a = K_b = 2
    assert t.miller_madow[0, 1].item() == pytest.approx(h + 1 / (2 * n * LN2), abs=1e-12)
    assert t.miller_madow[0, 0].item() == pytest.approx(t.miller_madow[0, 1].item(), abs=1e-12)


def test_shuffled_baseline_destroys_dependence_and_keeps_the_bias():
    g = torch.Generator().manual_seed(3)
    n, d = 1000, 6
    x = torch.randn(n, d, generator=g)
    x[:, 1] = x[:, 0] + 0.3 * torch.randn(n, generator=g)  # strongly dependent pair
    x[:, 3] = -x[:, 2]
    data = stats.sign_mi_tables(x)
    sh = stats.shuffled_sign_mi(x, seed=0, repeats=6)
    assert data.miller_madow[0, 1] > 0.5 and data.miller_madow[2, 3] > 0.99
    assert sh["mm_max"] < 0.02  # far below the dependent pairs
    assert sh["plugin_mean"] == pytest.approx(1 / (2 * n * LN2), rel=0.3)  # the plug-in bias
    assert abs(sh["mm_mean"]) < 3 * sh["mm_mean_sd"] + 1e-5
    assert sh["mm_mean_sd"] > 0 and sh["repeats"] == 6
    assert stats.shuffled_sign_mi(x, seed=0, repeats=6) == sh  # seeded
    assert stats.shuffled_sign_mi(x, seed=1, repeats=6) != sh


def test_bad_inputs_are_refused():
    x = torch.randn(10, 3)
    with pytest.raises(InvalidArgument, match="n >= 2"):
        stats.sign_mi_tables(x[:1])
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[2, 1] = bad
        with pytest.raises(InvalidArgument):
            stats.sign_mi_tables(y)
        with pytest.raises(InvalidArgument):
            stats.shuffled_sign_mi(y)
    with pytest.raises(InvalidArgument, match="d >= 2"):
        stats.shuffled_sign_mi(x[:, :1])
    with pytest.raises(InvalidArgument, match="n >= 2"):
        stats.shuffled_sign_mi(x[:1])
    with pytest.raises(InvalidArgument, match="repeats"):
        stats.shuffled_sign_mi(x, repeats=1)
