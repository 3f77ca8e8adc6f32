import pytest
import torch

import bagofdims as bd
from bagofdims.features.discovery import DiscoveryConfig, dim_auc, discover_rows, positive_rates

import planted


@pytest.fixture(scope="module")
def setup():
    return planted.make_cache()


def test_dim_auc_matches_rank_auc_of_each_sign(setup):
    cache, _, x = setup
    rows = torch.arange(100, 150)
    auc, pol = dim_auc(cache.packed("resid.0"), planted.D, [rows])
    labels = torch.zeros(planted.V, dtype=torch.bool)
    labels[rows] = True
    direct = bd.stats.auc((x > 0).double(), labels)  # sign as a 0/1 score, per column
    expect = torch.where(direct >= 0.5, direct, 1 - direct)
    torch.testing.assert_close(auc[0].double(), expect, atol=1e-6, rtol=0)
    assert torch.equal(pol[0], torch.where(direct >= 0.5, 1, -1).to(torch.int8))


@pytest.mark.parametrize("method", ["topk", "tau", "null"])
def test_discovery_recovers_planted_dims(setup, method):
    cache, tok, _ = setup
    f = bd.discover(cache, [f"w{i}" for i in range(100, 150)], site="resid.0", tokenizer=tok,
                    method=method, k=12)
    assert f.method == method and f.site == "resid.0" and f.width == planted.D
    assert set(f.dims.tolist()) <= set(range(12)) and len(f) >= 8
    assert (f.signs == 1).all()
    assert f.params["k"] == 12 and len(f.anchors) == 50


def test_discovery_polarity_follows_anchors(setup):
    cache, tok, _ = setup
    f = bd.discover(cache, list(range(300, 350)), site="resid.0", k=12)
    assert set(f.dims.tolist()) == set(range(12, 24)) and (f.signs == -1).all()


def test_tau_on_noise_finds_nothing_and_says_so(setup):
    cache, tok, _ = setup
    with pytest.raises(ValueError, match="lower tau"):
        bd.discover(cache, list(range(100, 150)), site="resid.1", method="tau", tau=0.75)


def test_null_threshold_keeps_min_dims_on_noise(setup):
    cache, _, _ = setup
    packed = cache.packed("resid.1")
    cfg = DiscoveryConfig(method="null", min_dims=4, null_sets=16)
    (dims, signs, auc, params), = discover_rows(packed, planted.D, [torch.arange(100, 150)], cfg)
    assert len(dims) == 4 and params["null_threshold"] > 0.5


def test_bad_anchor_input(setup):
    cache, tok, _ = setup
    with pytest.raises(ValueError, match="empty"):
        bd.discover(cache, [], site="resid.0")
    with pytest.raises(ValueError, match="single token"):
        bd.discover(cache, ["not-a-word", "nope"], site="resid.0", tokenizer=tok)
    with pytest.raises(KeyError, match="not in this cache"):
        bd.discover(cache, [1, 2, 3], site="resid.9")
    with pytest.raises(IndexError):
        bd.discover(cache, [planted.V + 5], site="resid.0")
    with pytest.raises(ValueError, match="Unknown discovery method"):
        bd.discover(cache, [1, 2], site="resid.0", method="magic")


def test_unsupervised_finds_planted_clusters(setup):
    cache, _, _ = setup
    res = bd.discover_unsupervised(cache, site="resid.0", n_seeds=300, n_neighbors=20, tau=0.75)
    s = res.summary()
    assert s["n_seeds"] == 300 and 0 <= s["yield"] <= 1 and 0 < s["sparsity"] < 1
    # seeds inside a planted category get features on its planted dims
    for f, sid in zip(res.features, res.seeds.tolist()):
        if 100 <= sid < 190 and len(f):
            assert len(set(f.dims.tolist()) & set(range(12))) >= len(f) // 2


def test_positive_rates_counts(setup):
    cache, _, x = setup
    torch.testing.assert_close(positive_rates(cache.packed("resid.0"), planted.D),
                               (x > 0).sum(0).double())


def test_hand_made_feature_validation():
    f = bd.Feature(name="mine", site="resid.20", dims=[3, 17, 40], signs=[1, -1, 1])
    assert len(f) == 3 and f.signs.dtype == torch.int8
    states = torch.zeros(2, 64)
    states[0, [3, 40]] = 1.0
    states[0, 17] = -1.0
    assert f.score(states).tolist() == pytest.approx([1.0, 1 / 3])
    with pytest.raises(ValueError, match="one sign"):
        bd.Feature(name="x", site="s", dims=[1, 2], signs=[1])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        bd.Feature(name="x", site="s", dims=[1], signs=[2])
    with pytest.raises(ValueError, match="out of range"):
        bd.Feature(name="x", site="s", dims=[64], signs=[1], width=64)
    with pytest.raises(ValueError, match="width"):
        f.score(torch.zeros(1, 8))
