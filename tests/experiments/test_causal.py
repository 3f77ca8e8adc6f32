"""The causal report's choices: layer grid, concept order, the E7 protocol on a tiny model and
the verdict rules."""

import string

import pytest
import torch

import tiny
from experiments.causal import CausalConfig, layer_grid
from experiments.causal_verdicts import verdicts
from experiments.sign_flips import PREFERRED, depth_summary, pick_concepts, run_e7


def test_layer_grid_takes_every_step_and_the_last_layer():
    assert layer_grid(30, 3) == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    assert layer_grid(30, 6) == [5, 11, 17, 23, 29]
    assert layer_grid(18, 4) == [3, 7, 11, 15, 17]  # the last block always joins
    assert layer_grid(3, 1) == [0, 1, 2]
    assert layer_grid(2, 5) == [1]


def test_pick_concepts_prefers_the_listed_order_and_tops_up_without_repeats():
    assert len(PREFERRED) == len(set(PREFERRED))
    names = ["zebra_thing", "city", "country", "other", "vertebrate"]
    assert pick_concepts(names, 2) == ["vertebrate", "country"]
    assert pick_concepts(names, 4) == ["vertebrate", "country", "city", "zebra_thing"]
    assert pick_concepts(names, 10) == ["vertebrate", "country", "city", "zebra_thing", "other"]


def test_causal_config_defaults_match_the_shipped_report():
    cfg = CausalConfig()
    assert (cfg.layer_step, cfg.e5_step, cfg.concepts, cfg.top_n) == (3, 6, 12, 200)
    # the protocol's floor: >= 10 evaluation prompts and >= 50 draws of each control per concept
    assert (cfg.prompts, cfg.select_prompts, cfg.draws) == (10, 5, 50)
    assert str(cfg.out_dir) == "runs/smollm2/reports"


@pytest.fixture(scope="module")
def e7():
    from bagofdims.catalog import Catalog
    from bagofdims.features.discovery import DiscoveryConfig
    from bagofdims.signs.cache import SignCache

    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = SignCache.build(model, tok, sites=["resid.*"], progress=False)
    cats = {"low": [f"w{i}" for i in range(3, 30)], "mid": [f"w{i}" for i in range(30, 60)],
            "high": [f"w{i}" for i in range(60, 90)]}
    cat = Catalog.build(cache, categories=cats, tokenizer=tok, n_anchors=12, n_min_held_out=5,
                        config=DiscoveryConfig(k=8), progress=False, evidence=None)
    words = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    for f in cat.features:  # prompts are built from alphabetic anchor words
        f.anchor_words = words[:12]
    return run_e7(model, tok, cat, [0, 1, 2], n_concepts=3, n_select=3, n_eval=4, n_draws=6,
                  depth_draws=3, seed=0)


def test_e7_chooses_layers_on_selection_prompts_and_measures_on_others(e7):
    for n in e7["names"]:
        sel, ev = e7["prompts"][n]["select"], e7["prompts"][n]["eval"]
        assert len(sel) == 3 and len(ev) == 4 and not set(sel) & set(ev)
        best = min(range(3), key=lambda i: e7["selection"][n][i])
        assert e7["chosen"][n] == e7["sites"][best]
    mean = torch.tensor([e7["selection"][n] for n in e7["names"]]).mean(0)
    assert e7["common_site"] == e7["sites"][int(mean.argmin())]
    for d in e7["distributions"]:
        assert d["site"] == e7["chosen"][d["name"]] and d["n_prompts"] == 4
        for kind in ("stratified", "disjoint"):
            ctl = torch.tensor(d["controls"][kind])
            assert len(ctl) == 6
            want = (1 + int((ctl <= d["effects"]["away"]).sum())) / 7
            assert d["p"][kind] == pytest.approx(want) and 1 / 7 <= d["p"][kind] <= 1
    sp = e7["specificity"]["stats"]
    assert sp["chance"] == pytest.approx(1 / 3) and sp["n"] == 3
    assert e7["summary"]["stratified"]["n"] == 3


def test_depth_summary_bootstraps_over_concepts():
    sites = [f"resid.{i}" for i in range(6)]
    depth = {n: {s: {"excess": (-0.2 if i >= 4 else 0.0) + 0.01 * k} for i, s in enumerate(sites)}
             for k, n in enumerate("abcd")}
    ds = depth_summary(depth, sites)
    assert ds["early"]["sites"] == sites[:2] and ds["late"]["sites"] == sites[-2:]
    assert ds["early"]["lo"] <= 0.015 <= ds["early"]["hi"] and ds["late"]["hi"] < 0


def _result(n_sig_s, n_sig_d, early, late, own_best, single=-0.001, n_single=0):
    n = 12
    kind = lambda k: {"n_significant": k, "n": n, "expected_by_chance": 0.6,  # noqa: E731
                      "p_count": 1.0 if k < 3 else 1e-4, "share_as_strong": 0.1,
                      "control_median": -0.01}
    spec = {"own_best": own_best, "n": n, "rate": own_best / n, "chance": 1 / n,
            "rate_lo": 0.0, "rate_hi": 1.0, "p_chance": 1e-5 if own_best >= 5 else 0.5,
            "margin": -0.1, "margin_lo": -0.2, "margin_hi": 0.0}
    e6row = {src: {"single_writer_fraction_cv": 0.07, "coalition_above_threshold_cv": 0.05}
             for src in ("model", "gaussian", "random_init")}
    return {"e5": {"sites": {"embed": {"n_categories": 30, "discoverable": {"0.9": 16}},
                             "k.5": {"n_categories": 30, "discoverable": {"0.9": 25}},
                             "v.5": {"n_categories": 30, "discoverable": {"0.9": 28}}}},
            "e6": {"resid.5": {"positive": e6row}},
            "e7": {"settings": {"alpha": 0.05, "n_draws": 50, "n_select": 5, "n_eval": 10},
                   "summary": {"stratified": kind(n_sig_s), "disjoint": kind(n_sig_d),
                               "away_median": -0.2, "toward_median": 0.0,
                               "single_median": single},
                   "depth_summary": {"early": dict(zip(("mean", "lo", "hi"), early)),
                                     "late": dict(zip(("mean", "lo", "hi"), late))},
                   "specificity": {"stats": spec},
                   "distributions": [{"effects": {"away": -0.2, "single": -0.15 if i < n_single
                                                  else -0.01}} for i in range(n)]}}


def test_verdict_rules():
    v = {r["claim"][:14]: r["verdict"] for r in verdicts(_result(12, 7, (-0.1, -0.2, -0.05),
                                                                   (-0.2, -0.3, -0.1), 10))}
    assert v["E7: flipping a"] == "reproduced" and v["E7: depth-gate"] == "not reproduced"
    assert v["E7 (implied): "] == "reproduced" and v["E7: single dim"] == "reproduced"
    assert v["E6: 20% of fea"] == "not reproduced" and v["E5: all 175 ca"] == "partially"
    assert v["E7: toward, di"] == "reproduced"  # 0.01 of 0.2
    v = {r["claim"][:14]: r["verdict"] for r in verdicts(_result(4, 1, (0.0, -0.05, 0.05),
                                                                   (-0.2, -0.3, -0.1), 1, -0.1, 7))}
    assert v["E7: flipping a"] == "partially" and v["E7: depth-gate"] == "reproduced"
    assert v["E7 (implied): "] == "not reproduced" and v["E7: single dim"] == "not reproduced"
    v = {r["claim"][:14]: r["verdict"] for r in verdicts(_result(0, 1, (0.0, -0.05, 0.05),
                                                                   (0.0, -0.1, 0.1), 1))}
    assert v["E7: flipping a"] == "not reproduced" and v["E7: depth-gate"] == "partially"
    v = {r["claim"][:14]: r["verdict"] for r in verdicts(_result(0, 1, (0, 0, 0), (0, 0, 0), 1,
                                                                   n_single=3))}
    assert v["E7: single dim"] == "partially"  # 3 of 12 concepts: one dim does half the work
    r = _result(12, 7, (0, 0, 0), (0, 0, 0), 10)
    r["e5"]["sites"]["k.5"]["discoverable"]["0.9"] = 30
    assert verdicts(r)[0]["verdict"] == "reproduced"  # every K/V site >= 90%, embedding not
    r["e5"]["sites"]["embed"]["discoverable"]["0.9"] = 29
    assert verdicts(r)[0]["verdict"] == "partially"  # the embedding passes too


def test_e5_verdict_reads_keys_after_rope_against_each_sites_null():
    r = _result(12, 7, (0, 0, 0), (0, 0, 0), 10)
    row = lambda above, auc9: {"n_categories": 30, "discoverable": {"0.9": auc9},  # noqa: E731
                               "above_null": above, "median_null_listed_auc": 0.8}
    r["e5"]["sites"] = {"embed": row(12, 16), "k.5": row(20, 30), "k_rot.5": row(28, 30),
                        "v.5": row(29, 30), "resid.5": row(30, 30)}
    e5 = verdicts(r)[0]
    # K before RoPE is not judged; K after RoPE (28 of 30 above null) and V (29) are
    assert e5["verdict"] == "reproduced" and "28–29 of 30 categories above their site's null at each of 2" in e5["ours"]
    assert "before 20" in e5["ours"] and "keys read before RoPE" not in e5["why"]
    r["e5"]["sites"]["k_rot.5"]["above_null"] = 20
    assert verdicts(r)[0]["verdict"] == "partially"  # V keeps 90%, K after RoPE does not
    r["e5"]["sites"]["v.5"]["above_null"] = 20
    assert verdicts(r)[0]["verdict"] == "not reproduced"


def test_e6_verdict_judges_top32_unless_tau_features_reach_hundreds_of_dims():
    r = _result(12, 7, (0, 0, 0), (0, 0, 0), 10)
    strong = {src: {"single_writer_fraction_cv": v, "coalition_above_threshold_cv": v}
              for src, v in (("model", 0.4), ("gaussian", 0.05), ("random_init", 0.1))}
    r["e6_rules"] = {"τ = 0.75, ≥ 8 dims": {"e6": {"resid.5": {"positive": strong}},
                                           "dims": {"resid.5": [0, 12, 30]}, "min_dims": 8},
                     "top-256": {"e6": {}, "dims": {"resid.5": [256, 256, 256]}, "min_dims": 0}}
    rows = [v for v in verdicts(r) if v["claim"].startswith("E6")]
    assert [v["verdict"] for v in rows] == ["not reproduced", "not reproduced"]  # top-32 judged
    assert "τ = 0.75, ≥ 8 dims features: model 0.40" in rows[0]["ours"]
    assert "top-32 features: model 0.07" in rows[0]["ours"] and "top-256" not in rows[0]["ours"]
    r["e6_rules"]["τ = 0.75, ≥ 8 dims"]["dims"] = {"resid.5": [80, 150, 300]}  # paper's regime
    rows = [v for v in verdicts(r) if v["claim"].startswith("E6")]
    assert [v["verdict"] for v in rows] == ["reproduced", "reproduced"]
