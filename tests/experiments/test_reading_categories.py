"""E3 / E8 numbers of the reading report (experiments.reading_categories) on the planted cache."""

import planted
import pytest

from experiments.reading_categories import catalog_pick, e3_by_site, e8_unsupervised


def test_catalog_pick_uses_anchors_only_and_finds_the_planted_site():
    cat, *_ = planted.make_catalog()
    for f in cat.at("resid.1"):  # were held-out numbers used, the pure-noise site would win
        f.metrics["held_out_auc"] = 1.0
    pick = catalog_pick(cat)
    assert pick["sites"] == {"resid.0": 3}
    assert pick["held_out_auc"]["n"] == 3 and pick["held_out_auc"]["median"] > 0.9


def test_e3_by_site_separates_the_planted_site_from_noise():
    cat, cache, *_ = planted.make_catalog()
    res = e3_by_site(cat, cache, n_null=5)
    assert set(res) == {"resid.0", "resid.1"}
    planted_site, noise = res["resid.0"], res["resid.1"]
    assert planted_site["n_categories"] == noise["n_categories"] == 3
    assert planted_site["discoverable"] == 3 and noise["discoverable"] == 0
    assert planted_site["held_out_auc"]["median"] > 0.95
    assert abs(noise["held_out_auc"]["median"] - 0.5) < 0.15
    # random anchor sets are the null: no better than chance at either site
    assert planted_site["null_held_out_auc"]["median"] < 0.7
    assert planted_site["per_category"].keys() == {"alpha", "beta", "gamma"}


def test_e8_reports_an_empty_site_as_yield_zero():
    cache, tok, _ = planted.make_cache()
    res = e8_unsupervised(cache, ["resid.0", "resid.1"], n_seeds=30, tokenizer=tok)
    # members of a planted category have neighbours that share its dims; noise has none
    assert res["resid.0"]["n_seeds"] == 30 and res["resid.0"]["yield"] > 0
    noise = res["resid.1"]
    assert (noise["yield"], noise["n_features"], noise["examples"]) == (0.0, 0, [])
    with pytest.raises(ValueError, match="n_seeds"):  # a bad argument still fails
        e8_unsupervised(cache, ["resid.0"], n_seeds=0)
