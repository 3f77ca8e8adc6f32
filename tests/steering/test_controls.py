"""Control distributions for sign flips, batched (bagofdims.steering.controls / significance)."""

import pytest
import torch

import tiny
from bagofdims import hook_count
from bagofdims.errors import BagOfDimsError
from bagofdims.features.feature import Feature
from bagofdims.steering.controls import (RowFlip, control_patterns, disjoint_draws,
                                         flip_distribution, flip_matrix, pattern_masses,
                                         site_statistics, stratified_draws)
from bagofdims.steering.effects import next_token_mass, specificity_matrix
from bagofdims.steering.interventions import sign_flip
from bagofdims.steering.significance import (binomial_tail, permutation_p, specificity_stats,
                                             wilson_interval)

SITE = "resid.1"
PROMPTS = ["w3 w4 w5 w6", "w7 w8 w9", "w10 w11"]  # different lengths: padding matters


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama")


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


def _feature(name="f", site=SITE, dims=(0, 3, 5, 7, 11), signs=(1, -1, 1, 1, -1), width=32):
    return Feature(name, site, list(dims), list(signs), anchors=list(range(3, 20)), width=width)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_controls_equal_one_at_a_time_flips(llama, tok, side):
    tok.padding_side = side
    f = _feature()
    tokens = torch.arange(3, 20)
    res = flip_distribution(llama, tok, f, PROMPTS, tokens, n_draws=5, rows_per_pass=7)
    base = next_token_mass(llama, tok, PROMPTS, [tokens])[:, 0]

    def one(feature, mode="away"):
        with sign_flip(llama, feature, mode=mode):
            return float((next_token_mass(llama, tok, PROMPTS, [tokens])[:, 0] - base).mean())

    assert res.effects["away"] == pytest.approx(one(f), abs=1e-6)
    assert res.effects["toward"] == pytest.approx(one(f, "toward"), abs=1e-6)
    single = Feature("s", SITE, [0], [1])
    assert res.effects["single"] == pytest.approx(one(single), abs=1e-6)
    # every control draw, rebuilt as a Feature and flipped alone, gives the batched effect
    mag, mean = site_statistics(llama, tok, PROMPTS, SITE)[SITE]
    for i, kind in enumerate(("stratified", "disjoint")):
        draws = stratified_draws(mag, f.dims, 5, seed=i) if kind == "stratified" else \
            disjoint_draws(32, f.dims, 5, seed=i)
        for j, dims in enumerate(draws):
            ctl = Feature("c", SITE, dims, torch.where(mean[dims] >= 0, 1, -1))
            assert res.controls[kind][j] == pytest.approx(one(ctl), abs=1e-6)
    assert hook_count(llama) == 0
    tok.padding_side = "right"


def test_draws_are_disjoint_from_the_feature_and_stratified_by_magnitude():
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(200, generator=g) * 10
    dims = torch.tensor([1, 50, 99, 150, 199])
    strat = stratified_draws(mag, dims, 40, strata=10, seed=1)
    disj = disjoint_draws(200, dims, 40, seed=1)
    for draws in (strat, disj):
        assert draws.shape == (40, 5)
        assert not torch.isin(draws, dims).any()
        assert all(len(set(r.tolist())) == 5 for r in draws)  # no dim twice in a draw
        assert len({tuple(sorted(r.tolist())) for r in draws}) > 30  # many different draws
    # each feature dim's stratum: the bin of outside dims whose magnitudes bracket it
    outside = torch.tensor([i for i in range(200) if i not in dims.tolist()])
    edges = torch.quantile(mag[outside], torch.linspace(0, 1, 11))
    bin_of = lambda m: int(torch.searchsorted(edges[1:-1], m))  # noqa: E731
    want = sorted(bin_of(mag[d]) for d in dims)
    assert all(sorted(bin_of(mag[x]) for x in r) == want for r in strat)
    assert not all(sorted(bin_of(mag[x]) for x in r) == want for r in disj)
    pats = control_patterns(disj, torch.randn(200, generator=g))
    assert bool(((pats != 0).sum(1) == 5).all()) and set(pats.unique().tolist()) == {-1.0, 0.0, 1.0}
    with pytest.raises(BagOfDimsError, match="out of range"):
        disjoint_draws(6, dims, 2)
    with pytest.raises(BagOfDimsError, match="outside"):
        stratified_draws(torch.rand(8), torch.arange(5), 2)


def test_row_flip_refuses_a_wrong_batch_and_leaves_no_hook(llama, tok):
    pats = {SITE: torch.zeros(4, 32)}
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with pytest.raises(BagOfDimsError, match="one row per batch row"):
        with RowFlip(llama, pats):
            llama(**enc)
    assert hook_count(llama) == 0
    # an all-zero pattern is the unflipped model
    tokens = torch.arange(3, 20)
    zero = pattern_masses(llama, tok, PROMPTS, [tokens], {SITE: torch.zeros(2, 32)})
    plain = next_token_mass(llama, tok, PROMPTS, [tokens])[:, 0]
    torch.testing.assert_close(zero[0, :, 0], plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(zero[1], zero[0])


def test_flip_matrix_equals_the_one_at_a_time_specificity_matrix(llama, tok):
    from bagofdims.catalog import Catalog
    from bagofdims.features.discovery import DiscoveryConfig
    from bagofdims.signs.cache import SignCache

    cache = SignCache.build(llama, tok, sites=["resid.*"], progress=False)
    cats = {"low": [f"w{i}" for i in range(3, 30)], "mid": [f"w{i}" for i in range(30, 60)],
            "high": [f"w{i}" for i in range(60, 90)]}
    cat = Catalog.build(cache, categories=cats, tokenizer=tok, n_anchors=12, n_min_held_out=5,
                        config=DiscoveryConfig(k=8), progress=False, evidence=None)
    names = ["low", "mid", "high"]
    prompts = {"low": ["w3 w4 w5", "w6 w7"], "mid": ["w31 w32 w33"], "high": ["w61 w62", "w63"]}
    from bagofdims.steering.effects import concept_tokens

    feats = [cat.get(n, SITE) for n in names]
    got = flip_matrix(llama, tok, feats, prompts, {f.name: concept_tokens(f) for f in feats},
                      rows_per_pass=4)
    ref = specificity_matrix(llama, tok, cat, names, SITE, prompts=prompts)
    torch.testing.assert_close(torch.tensor(got["delta_logp"]), torch.tensor(ref["delta_logp"]),
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(got["baseline_mass"]), torch.tensor(ref["baseline_mass"]),
                               atol=1e-6, rtol=1e-5)


def test_permutation_p_bounds_and_ties():
    ctl = torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.2])
    p = permutation_p(torch.tensor([-1.0, -0.1, 5.0]), ctl)
    assert p.tolist() == [1 / 6, 3 / 6, 1.0]  # below all: 1/(n+1); a tie counts; above all: 1
    many = permutation_p(torch.randn(1000), torch.randn(1000, 49))
    assert float(many.min()) >= 1 / 50 and float(many.max()) <= 1.0
    # exchangeable effect and controls: P(p <= 0.1) is about 0.1 (the test is calibrated)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 20, generator=g)
    p = permutation_p(x[:, 0], x[:, 1:])
    assert abs(float((p <= 0.1).double().mean()) - 0.1) < 0.02
    with pytest.raises(BagOfDimsError):
        permutation_p(0.0, torch.zeros(0))


def test_specificity_chance_level_and_interval():
    c = 12
    perfect = torch.full((c, c), -0.1) + torch.diag(torch.full((c,), -1.0))
    s = specificity_stats(perfect)
    assert (s["own_best"], s["rate"], s["chance"]) == (c, 1.0, 1 / c)
    assert s["p_chance"] < 1e-10 and s["margin"] == pytest.approx(-1.0)
    assert s["margin_hi"] < 0 and s["rate_lo"] > 0.7
    # exchangeable rows: the own-best rate averages the stated chance 1/C
    g = torch.Generator().manual_seed(1)
    rates = [specificity_stats(torch.randn(c, c, generator=g), n_boot=10)["rate"] for _ in range(600)]
    assert abs(sum(rates) / len(rates) - 1 / c) < 0.01
    lo, hi = wilson_interval(3, 12)
    assert lo < 3 / 12 < hi and 0 <= lo and hi <= 1
    assert binomial_tail(0, 12, 1 / 12) == pytest.approx(1.0)
    assert binomial_tail(2, 12, 1 / 12) == pytest.approx(1 - (11 / 12) ** 12 - 12 * (1 / 12) * (11 / 12) ** 11)
    with pytest.raises(BagOfDimsError):
        specificity_stats(torch.zeros(3, 2))
