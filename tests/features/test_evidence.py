"""Null references, bootstrap intervals and p-values (bagofdims.features.evidence)."""

import pytest
import torch

import bagofdims as bd
import planted
from bagofdims import stats
from bagofdims.errors import BagOfDimsError
from bagofdims.features.discovery import DiscoveryConfig
from bagofdims.features.evaluation import membership
from bagofdims.features.evidence import (EvidenceConfig, bootstrap_interval, category_interval,
                                         evaluate_site, member_wins, p_value, reference_evidence,
                                         site_evidence)
from bagofdims.features.discovery import discover_rows, positive_rates


def test_member_wins_average_to_the_exact_auc_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (300, 4), generator=g).float() / 5  # many ties
    held = torch.rand(300, 4, generator=g) < 0.1
    neg = ~held & (torch.rand(300, 4, generator=g) < 0.8)
    u, valid = member_wins(scores, held, neg)
    mean = (u * valid).sum(1) / valid.sum(1)
    torch.testing.assert_close(mean, stats.auc(scores, held, held | neg))


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_members():
    g = torch.Generator().manual_seed(1)
    few, many = torch.rand(1, 12, generator=g), torch.rand(1, 400, generator=g)
    lo1, hi1 = bootstrap_interval(few, torch.ones_like(few, dtype=torch.bool))
    lo2, hi2 = bootstrap_interval(many, torch.ones_like(many, dtype=torch.bool))
    assert lo1 <= few.mean() <= hi1 and lo2 <= many.mean() <= hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 2
    one = torch.tensor([[0.7, 0.0]], dtype=torch.float64)
    lo, hi = bootstrap_interval(one, torch.tensor([[True, False]]))
    assert torch.isnan(lo).all() and torch.isnan(hi).all()  # no spread to resample


def _planted_sets(cache):
    rows = [torch.tensor([int(w[1:]) for w in ws]) for ws in planted.categories().values()]
    g = torch.Generator().manual_seed(5)
    listed = torch.cat(rows)
    pseudo = listed[torch.randperm(len(listed), generator=g)[:90]]  # a random listed-word set
    anchors = [r[:50] for r in rows] + [pseudo[:50]]
    held = [r[50:] for r in rows] + [pseudo[50:]]
    return anchors, held


def test_planted_categories_beat_every_null_and_a_pseudo_category_does_not():
    cache, _, _ = planted.make_cache()
    packed, d = cache.packed("resid.0"), cache.width("resid.0")
    anchors, held = _planted_sets(cache)
    ev = EvidenceConfig(n_draws=40, n_boot=300)
    out = evaluate_site(packed, d, anchors, held, DiscoveryConfig(), ev)
    metrics = [m for _, m, _ in out]
    alpha = 0.05
    for m in metrics[:3]:  # the planted categories
        assert m["held_out_auc"] > max(m["null_token_auc"], m["null_listed_q95"])
        assert m["p_token"] < alpha and m["p_listed"] < alpha
        assert m["held_out_auc_lo"] <= m["held_out_auc"] <= m["held_out_auc_hi"]
    assert metrics[3]["p_listed"] > alpha  # drawn from the listed words: not a category
    assert metrics[0]["null_auc"] == max(metrics[0]["null_token_auc"], metrics[0]["null_listed_auc"])


def test_choices_never_read_held_out_members():
    """Poison the held-out members' signs: the dims chosen stay the same, only scores move."""
    cache, _, _ = planted.make_cache()
    packed, d = cache.packed("resid.0").clone(), cache.width("resid.0")
    anchors, held = _planted_sets(cache)
    before = discover_rows(packed, d, anchors, DiscoveryConfig(), positive_rates(packed, d))
    poisoned = packed.clone()
    rows = torch.cat(held[:3])
    poisoned[rows] = ~poisoned[rows]
    # the vocabulary-wide positive rates change too; discovery must still pick from anchors
    after = discover_rows(poisoned, d, anchors, DiscoveryConfig(), positive_rates(packed, d))
    for (d1, s1, _, _), (d2, s2, _, _) in zip(before[:3], after[:3]):  # the pseudo set's anchors
        # are drawn from listed words, held-out members included, so only the categories count
        assert torch.equal(d1, d2) and torch.equal(s1, s2)
    ev = EvidenceConfig(n_draws=10, n_boot=100)
    res_b = site_evidence(packed, d, before, anchors, held, DiscoveryConfig(), ev,
                          torch.ones(len(before)))
    res_a = site_evidence(poisoned, d, after, anchors, held, DiscoveryConfig(), ev,
                          torch.ones(len(after)))
    assert res_a["held_out_auc_hi"][0] < res_b["held_out_auc_lo"][0]  # the scores did move


def test_catalog_records_evidence_and_settings(tmp_path):
    cat, cache, tok, _ = planted.make_catalog(sites=("resid.0",))
    f = cat["alpha"]
    for key in ("held_out_auc_lo", "held_out_auc_hi", "null_token_auc", "null_listed_auc",
                "p_token", "p_listed", "null_auc"):
        assert key in f.metrics
    assert cat.meta.evidence == EvidenceConfig().to_dict()
    loaded = bd.Catalog.load(cat.save(tmp_path / "c"))
    assert loaded["alpha"].metrics == f.metrics and loaded.meta.evidence == cat.meta.evidence
    bare = bd.Catalog.build(cache, categories=planted.categories(), sites="resid.0", tokenizer=tok,
                            progress=False, evidence=None)
    assert "p_listed" not in bare["alpha"].metrics and bare.meta.evidence == {}
    assert bare["alpha"].metrics["held_out_auc"] == f.metrics["held_out_auc"]


@pytest.mark.parametrize("kw", [{"n_draws": 0}, {"n_boot": -1}, {"level": 1.2}, {"n_draws": 2.5}])
def test_evidence_config_refuses_bad_values(kw):
    with pytest.raises(BagOfDimsError):
        EvidenceConfig(**kw)


def test_membership_helper_is_consistent():
    m = membership(5, [torch.tensor([0, 2]), torch.tensor([4])])
    assert m.tolist() == [[True, False], [False, False], [True, False], [False, False], [False, True]]


def test_hard_negative_reference_and_above_null_decision():
    cache, _, _ = planted.make_cache()
    packed, d = cache.packed("resid.0"), cache.width("resid.0")
    anchors, held = _planted_sets(cache)
    out = evaluate_site(packed, d, anchors, held, DiscoveryConfig(), EvidenceConfig(n_draws=30,
                                                                                     n_boot=200))
    metrics = [m for _, m, _ in out]
    for m in metrics[:3]:  # planted: above the pseudo-categories' hard AUC too
        assert m["p_hard"] < 0.05 and m["above_null"] == 1.0
        assert m["hard_auc_lo"] <= m["hard_auc"] <= m["hard_auc_hi"]
    # a pseudo-category of listed words scores about chance against the other listed words
    assert abs(metrics[0]["null_listed_hard_auc"] - 0.5) < 0.1
    assert metrics[3]["above_null"] == 0.0
    assert metrics[0]["null_listed_q05"] <= metrics[0]["null_listed_auc"] <= metrics[0]["null_listed_q95"]


def test_reference_evidence_gain_is_zero_against_itself_and_positive_against_noise():
    cache, _, _ = planted.make_cache()
    packed, d = cache.packed("resid.0"), cache.width("resid.0")
    anchors, held = _planted_sets(cache)
    anchors, held = anchors[:3], held[:3]
    found = discover_rows(packed, d, anchors, DiscoveryConfig())
    from bagofdims.features.evaluation import prototype_scores

    scores = prototype_scores(packed, d, [(f[0], f[1]) for f in found])
    same = reference_evidence(packed, d, anchors, held, DiscoveryConfig(), scores=scores)
    assert torch.equal(same["ref_gain"], torch.zeros(3, dtype=torch.float64))
    noise = bd.bits.pack_signs(torch.randn(packed.shape[0], d, generator=torch.Generator().manual_seed(4)))
    ref = reference_evidence(noise, d, anchors, held, DiscoveryConfig(), EvidenceConfig(n_boot=200),
                             scores)
    assert bool((ref["ref_held_out_auc"] - 0.5).abs().max() < 0.15)
    assert bool((ref["ref_gain_lo"] > 0.3).all())  # the planted site adds a lot over noise
    med, lo, hi = category_interval(ref["u_gain"], ref["valid"], n_boot=200)
    assert lo <= med <= hi and lo > 0.3
    with pytest.raises(BagOfDimsError, match="rows"):
        reference_evidence(noise, d, anchors, held, DiscoveryConfig(), scores=scores[:10])


def test_category_interval_brackets_the_median_and_narrows_with_categories():
    g = torch.Generator().manual_seed(2)
    few = 0.8 + 0.1 * torch.randn(6, generator=g)
    many = 0.8 + 0.1 * torch.randn(300, generator=g)
    m1, lo1, hi1 = category_interval(few, n_boot=500)
    m2, lo2, hi2 = category_interval(many, n_boot=500)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2 and m1 == float(few.double().median())
    assert (hi2 - lo2) < (hi1 - lo1) / 2
    # two levels: members add spread when categories agree exactly
    u = torch.rand(5, 8, generator=g, dtype=torch.float64)
    u = u - u.mean(1, keepdim=True) + 0.7  # every category's mean is 0.7
    valid = torch.ones_like(u, dtype=torch.bool)
    m, lo, hi = category_interval(u, valid, n_boot=500)
    assert abs(m - 0.7) < 1e-9 and lo < 0.7 - 1e-3 and hi > 0.7 + 1e-3
    assert category_interval(torch.tensor([float("nan")]))[0] != category_interval(torch.tensor([float("nan")]))[0]


def test_p_value_counts_ties_and_is_never_zero():
    null = torch.tensor([0.5, 0.6, 0.7, 0.7])
    p = p_value(null, torch.tensor([0.9, 0.7, 0.1]))
    assert p.tolist() == [1 / 5, 3 / 5, 1.0]
