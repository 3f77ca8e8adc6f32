import inspect
import warnings

import numpy as np
import pytest
import torch

import bagofdims as bd
from bagofdims.features import discovery
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


def test_float_anchors_are_refused_not_truncated(setup):
    cache, _, _ = setup
    for bad in ([100.0, 101.0, 102.0], [100, 101.5, 102], torch.arange(100, 150).float(),
                np.arange(100, 150, dtype=np.float64), [100, True, 102]):
        with pytest.raises(TypeError, match="anchors must be integers"):
            bd.discover(cache, bad, site="resid.0", k=12)
    with pytest.raises(TypeError, match="101.5"):  # the message names the value
        bd.discover(cache, [100, 101.5, 102], site="resid.0")
    # integer-valued ids of any int dtype give the same feature
    ref = bd.discover(cache, list(range(100, 150)), site="resid.0", k=12)
    for ids in (torch.arange(100, 150, dtype=torch.int32), torch.arange(100, 150, dtype=torch.int16),
                np.arange(100, 150, dtype=np.uint16), [np.int64(i) for i in range(100, 150)]):
        f = bd.discover(cache, ids, site="resid.0", k=12)
        assert torch.equal(f.dims, ref.dims) and f.anchors == ref.anchors


def test_config_and_row_numbers_must_be_whole(setup):
    cache, _, _ = setup
    with pytest.raises(TypeError, match="k must be a whole number"):
        DiscoveryConfig(k=3.5)
    with pytest.raises(TypeError, match="min_dims"):
        DiscoveryConfig(method="null", min_dims=2.0)
    with pytest.raises(ValueError, match="min_dims <= k_max"):
        DiscoveryConfig(min_dims=10, k_max=5)
    assert DiscoveryConfig(k=np.int64(5)).k == 5
    packed = cache.packed("resid.0")
    with pytest.raises(TypeError, match="anchor rows must be integers"):
        dim_auc(packed, planted.D, [torch.arange(100, 150).float()])
    with pytest.raises(IndexError, match="0..2999"):  # -1 would silently read the last row
        dim_auc(packed, planted.D, [torch.tensor([-1, 5, 6])])
    with pytest.raises(ValueError, match="repeats a row"):  # would count the row twice
        dim_auc(packed, planted.D, [torch.tensor([5, 5, 6])])
    with pytest.raises(TypeError, match="uint8"):
        dim_auc(packed.long(), planted.D, [torch.tensor([5, 6])])


def test_a_single_string_or_mixed_anchors_are_refused(setup):
    cache, tok, _ = setup
    with pytest.raises(TypeError, match=r"list of words, e.g. \['w100'\]"):
        bd.discover(cache, "w100", site="resid.0", tokenizer=tok)
    with pytest.raises(TypeError, match="mix words"):
        bd.discover(cache, ["w100", 101, "w102"], site="resid.0", tokenizer=tok)


def test_too_few_anchors_are_refused_or_warned(setup):
    cache, tok, _ = setup
    with pytest.raises(ValueError, match="min_anchors=2"):
        bd.discover(cache, [100], site="resid.0")
    with pytest.raises(ValueError, match="1 distinct anchor"):  # duplicates count once
        bd.discover(cache, [100, 100, 100], site="resid.0")
    with pytest.raises(ValueError, match="min_anchors=5"):
        bd.discover(cache, [100, 101, 102], site="resid.0", min_anchors=5)
    with pytest.warns(UserWarning, match="Only 5 distinct anchors"):
        f = bd.discover(cache, list(range(100, 105)), site="resid.0", k=12)
    assert len(f) == 12 and f.anchors == list(range(100, 105))
    with pytest.warns(UserWarning, match="Only 1 distinct"):
        bd.discover(cache, [100], site="resid.0", min_anchors=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 10 or more: no warning
        bd.discover(cache, [f"w{i}" for i in range(100, 110)], site="resid.0", tokenizer=tok)


def test_word_anchors_need_a_tokenizer_and_discovery_loads_none(setup, monkeypatch):
    cache, tok, _ = setup
    calls = []
    monkeypatch.setattr(bd.models, "load_tokenizer", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match="pass tokenizer="):
        bd.discover(cache, [f"w{i}" for i in range(100, 150)], site="resid.0")
    assert calls == []  # the feature layer never loads a model or tokenizer
    assert "import load_tokenizer" not in inspect.getsource(discovery)
    f = bd.discover(cache, list(range(100, 150)), site="resid.0")  # token ids need none
    assert f.anchor_words == [] and len(f.anchors) == 50


def test_unknown_site_and_out_of_vocab_ids(setup):
    cache, _, _ = setup
    with pytest.raises(KeyError, match="resid.0") as err:  # lists the cache's sites
        bd.discover(cache, list(range(100, 150)), site="resid.7")
    assert isinstance(err.value, bd.errors.NotFound)
    with pytest.raises(IndexError, match="0..2999") as err:
        bd.discover(cache, [100, 101, planted.V + 5], site="resid.0")
    assert isinstance(err.value, bd.errors.OutOfRange)
    with pytest.raises(IndexError, match="0..2999"):
        bd.discover(cache, [-1, 100, 101], site="resid.0")


def test_unsupervised_never_returns_an_empty_feature(setup):
    cache, _, _ = setup
    res = bd.discover_unsupervised(cache, site="resid.0", n_seeds=300, n_neighbors=20, tau=0.75)
    assert all(len(f) > 0 for f in res.features)
    assert res.n_dropped == int((res.n_dims == 0).sum()) > 0  # most seeds are noise here
    assert len(res.features) + res.n_dropped == 300 == len(res.n_dims)
    assert torch.equal(res.n_dims[res.kept], torch.tensor([len(f) for f in res.features]))
    s = res.summary()
    assert s["n_features"] == len(res.features) and s["n_dropped"] == res.n_dropped
    # the summary still counts every seed (a dropped one uses no dim)
    assert s["sparsity"] == pytest.approx(1 - float(res.n_dims.double().mean()) / planted.D)
    with pytest.raises(ValueError, match="no feature to return"):
        bd.discover_unsupervised(cache, site="resid.1", n_seeds=50, n_neighbors=20, tau=1.0)
    with pytest.raises(TypeError, match="n_seeds"):
        bd.discover_unsupervised(cache, site="resid.0", n_seeds=30.0)
    with pytest.raises(ValueError, match="n_neighbors"):
        bd.discover_unsupervised(cache, site="resid.0", n_seeds=3, n_neighbors=planted.V)


def test_unsupervised_finds_planted_clusters(setup):
    cache, _, _ = setup
    res = bd.discover_unsupervised(cache, site="resid.0", n_seeds=300, n_neighbors=20, tau=0.75)
    s = res.summary()
    assert s["n_seeds"] == 300 and 0 <= s["yield"] <= 1 and 0 < s["sparsity"] < 1
    # seeds inside a planted category get features on its planted dims
    assert len(res.features) == len(res.kept) > 0
    for f, sid in zip(res.features, res.seeds[res.kept].tolist()):
        assert f.params["seed_token"] == sid
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
