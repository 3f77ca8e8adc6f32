"""compare_to_catalog on a synthetic cache + catalog with planted category features."""

import dataclasses
import pytest
import torch

import bagofdims as bd
import planted
from probes import compare_to_catalog, mass_on_dims, sign_agreement
from probes.compare import COLUMNS


@pytest.fixture(scope="module")
def setup():
    cat, cache, _, x = planted.make_catalog()
    return cache, cat, x


@pytest.fixture(scope="module")
def report(setup):
    cache, cat, _ = setup
    return compare_to_catalog(cache, cat, site="resid.0", inputs=("signs", "states"), folds=3)


def test_protocol_anchors_never_tested_held_out_all_tested(setup, report):
    cache, cat, _ = setup
    feats = cat.at("resid.0")
    assert report.rows_used.tolist() == list(range(len(cache)))  # no subsampling by default
    for inp in ("signs", "states"):
        cv = report.cv[inp]
        for j, f in enumerate(feats):
            a, h = cache.rows(f.anchors), cache.rows(f.held_out)
            assert not cv.tested[a, j].any(), "an anchor was scored"
            assert cv.tested[h, j].all(), "a held-out member was not scored"
            # every non-member is a test negative exactly once (fold >= 0), members of no other kind
            n_neg = len(cache) - len(a) - len(h)
            assert int(cv.n_test_neg[j]) == n_neg
            assert set(cv.fold[h, j].tolist()) <= {0, 1, 2}


def test_prototype_auc_is_the_catalogs_on_the_same_rows(report):
    # Pooled over folds the test rows are held-out vs all non-members: the catalog's own metric.
    for r in report.rows:
        assert r["proto_auc"] == pytest.approx(r["catalog_auc"], abs=1e-9)
        assert r["gain"] == pytest.approx(r["logistic_auc"] - r["proto_auc"], abs=1e-12)


def test_probe_recovers_planted_dims(setup, report):
    cache, cat, _ = setup
    feats = cat.at("resid.0")
    for inp in ("signs", "states"):
        W = report.weights[inp]
        for j, f in enumerate(feats):
            _, dims, sign = planted.PLANTED[f.name]
            dims = torch.tensor(list(dims))
            agree = sign_agreement(W[:, j], dims, torch.full((len(dims),), sign))
            assert agree >= 0.95, (inp, f.name, agree)
            mass = mass_on_dims(W[:, j], dims)
            assert mass > 3 * len(dims) / W.shape[0], (inp, f.name, mass)  # far above chance
    for r in report.rows:
        assert r["logistic_auc"] > 0.97 and r["proto_auc"] > 0.97
        assert r["sign_agreement"] > 0.75  # the prototype's extra dims are weaker but agree too
        assert r["mass_on_dims"] > r["chance_mass"]


def test_noise_site_gives_chance(setup):
    cache, cat, _ = setup
    rep = compare_to_catalog(cache, cat, site="resid.1", inputs=("signs",), folds=3)
    for r in rep.rows:
        assert abs(r["logistic_auc"] - 0.5) < 0.15 and abs(r["proto_auc"] - 0.5) < 0.15


def test_table_and_summary(report):
    t = report.table()
    header = [c.strip() for c in t.splitlines()[0].strip("|").split("|")]
    assert header == list(COLUMNS)
    for col in ("proto_auc", "logistic_auc", "mlp_auc", "sign_agreement", "mass_on_dims",
                "chance_mass"):
        assert col in header
    assert len(t.splitlines()) == 2 + 2 * 3  # header, rule, 3 categories x 2 inputs
    s = report.summary()
    assert set(s) == {"signs", "states"}
    gains = torch.tensor([r["gain"] for r in report.records("signs")], dtype=torch.float64)
    assert s["signs"]["gain_mean"] == pytest.approx(float(gains.mean()))
    assert s["signs"]["gain_std"] == pytest.approx(float(gains.std()))
    assert s["signs"]["probe_wins"] == pytest.approx(float((gains > 0).double().mean()))
    d = report.to_dict()
    assert d["site"] == "resid.0" and len(d["rows"]) == 6


def test_mlp_subset_and_negative_subsample(setup):
    cache, cat, _ = setup
    rep = compare_to_catalog(cache, cat, site="resid.0", inputs=("signs",), folds=3,
                             mlp=["beta"], mlp_kwargs=dict(hidden=8, max_epochs=15, lr=1e-2),
                             max_negatives=800)
    assert len(rep.rows_used) == 800 + 3 * 90
    by = {r["category"]: r for r in rep.rows}
    assert by["beta"]["mlp_auc"] > 0.9
    assert by["alpha"]["mlp_auc"] != by["alpha"]["mlp_auc"]  # NaN: no MLP for alpha
    assert rep.summary()["signs"]["mlp_categories"] == 1
    # the planted category is axis-aligned: the MLP's mean input gradients agree in sign with
    # the prototype on its dims and put more than chance of their mass there
    assert by["beta"]["mlp_sign_agreement"] > 0.9
    assert by["beta"]["mlp_mass_on_dims"] > by["beta"]["chance_mass"] + 0.05
    assert by["alpha"]["mlp_sign_agreement"] != by["alpha"]["mlp_sign_agreement"]  # NaN


def test_errors(setup):
    cache, cat, _ = setup
    with pytest.raises(KeyError, match="no features"):
        compare_to_catalog(cache, cat, site="resid.7")
    with pytest.raises(ValueError, match="inputs"):
        compare_to_catalog(cache, cat, site="resid.0", inputs=("logits",))
    no_mag = bd.SignCache(dataclasses.replace(cache.meta, magnitudes=False), cache._signs, None)
    cat2 = bd.Catalog(cat.features, cat.meta, cache=no_mag)
    with pytest.raises(ValueError, match="model="):
        compare_to_catalog(no_mag, cat2, site="resid.0", inputs=("states",))


@pytest.mark.parametrize("bos", [False, True])
def test_vocab_states_match_the_cache(bos):
    import tiny
    from probes import vocab_states

    model, tok = tiny.make("llama"), tiny.tokenizer()
    ids = torch.tensor([9, 3, 50, 21])
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], bos=bos, tokens=ids, magnitudes=True,
                               progress=False)
    st = vocab_states(model, cache, "resid.1", rows=[2, 0, 3], batch_size=2)
    assert st.dtype == torch.float32 and st.shape == (3, cache.width("resid.1"))
    expect = cache.signs("resid.1").float()[[2, 0, 3]] * cache.magnitudes("resid.1").float()[[2, 0, 3]]
    torch.testing.assert_close(st, expect, atol=2e-3, rtol=2e-3)  # magnitudes are float16
