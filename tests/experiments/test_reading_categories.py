"""E3 / E8 numbers of the reading report (experiments.reading_categories) on the planted cache."""

import planted
import pytest
import torch

from bagofdims.features.evidence import EvidenceConfig
from bagofdims.features.selection import SelectionConfig
from bagofdims.signs import bits
from bagofdims.features.discovery import positive_rates
from experiments.reading_categories import (_IidSigns, catalog_pick, e3_by_site, e3_selection,
                                            e8_iid_null, e8_unsupervised)


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


def test_e3_selection_reports_the_anchors_choice_with_every_reference():
    cat, cache, *_ = planted.make_catalog()
    d = cache.width("resid.0")
    noise = bits.pack_signs(torch.randn(len(cache), d, generator=torch.Generator().manual_seed(3)))
    res = e3_selection(cat, cache, (noise, d), EvidenceConfig(n_draws=20, n_boot=200),
                       SelectionConfig(ks=(4, 12), folds=4))
    assert res["choice"]["site"] == "resid.0" and res["n_categories"] == 3
    h = res["held_out_auc"]
    assert h["lo"] <= h["median"] <= h["hi"] and h["median"] > 0.95
    assert res["above_null"] == 3 and res["null_listed"]["q10"] <= res["null_listed"]["q90"]
    # the embedding reference here is noise: chance level, and the site adds a lot over it
    assert abs(res["embedding"]["median"] - 0.5) < 0.15 and res["gain_over_embedding"]["lo"] > 0.3
    assert res["choice"]["upper_bound"]["note"].startswith("chosen on held-out members")
    assert set(res["per_category"]) == {"alpha", "beta", "gamma"}


def test_e8_iid_null_keeps_the_rates_and_loses_the_structure():
    cache, tok, _ = planted.make_cache()
    real = e8_unsupervised(cache, ["resid.0"], n_seeds=300, tokenizer=tok)["resid.0"]
    null = e8_iid_null(cache, ["resid.0"], n_seeds=300)["resid.0"]
    # seeds among the planted members (9% of rows) find features; i.i.d. signs give none
    assert real["yield"] > 0.05 and null["yield"] <= 0.01
    fake = _IidSigns(cache, "resid.0", seed=0)
    d = cache.width("resid.0")
    rates = positive_rates(cache.packed("resid.0"), d) / len(cache)
    assert float((positive_rates(fake.packed("resid.0"), d) / len(cache) - rates).abs().max()) < 0.05
