"""E4's verdict rows (rules fixed in experiments/probe_verdicts.py) and its anchors-only sites."""

import math

import numpy as np
import pytest

import planted
from bagofdims.errors import InvalidArgument
from experiments import probe_verdicts as pv
from experiments.probe_comparison import markdown, pick_sites

N = 30


def _rows(gain, sign, share, rot_share, mlp=None, inp="states", seed=0):
    rng = np.random.default_rng(seed)
    jitter = lambda: rng.normal(0, 0.002, N)  # noqa: E731 - a little spread across categories
    g, s, m, r = gain + jitter(), sign + jitter(), share + jitter(), rot_share + jitter()
    ml = (0.97 + mlp + jitter()) if mlp is not None else np.full(N, math.nan)
    out = []
    for j in range(N):
        out.append({"category": f"c{j}", "input": inp, "gain": g[j], "logistic_auc": 0.97,
                    "proto_auc": 0.97 - g[j], "sign_agreement": min(s[j], 1.0),
                    "rot_sign_agreement": 0.9, "mass_on_dims": m[j], "rot_mass_on_dims": r[j],
                    "chance_mass": 0.0556, "mlp_auc": ml[j],
                    "mlp_sign_agreement": math.nan if mlp is None else 0.99})
    return out


def _res(*reps):
    return {"reports": [{"site": f"resid.{i}", "settings": {"inputs": ["signs", "states"]},
                         "rows": rows} for i, rows in enumerate(reps)]}


def _verdicts(**kw):
    return {r["claim"][:3]: r["verdict"] for r in pv.verdicts(_res(_rows(**kw)))}


def test_four_rows_and_a_table():
    rows = pv.verdicts(_res(_rows(0.018, 0.95, 0.10, 0.09, mlp=0.0), _rows(0.02, 0.9, 0.1, 0.1)))
    assert [r["claim"][:3] for r in rows] == ["(a)", "(b)", "(c)", "(d)"]
    assert all(r["verdict"] in {"reproduced", "partially", "not reproduced", "not tested"}
               for r in rows)
    assert "resid.1: +0.020" in rows[0]["why"]  # the late site is quoted, not judged
    t = pv.table(rows).splitlines()
    assert len(t) == 2 + 4 and t[0].startswith("| paper claim")


@pytest.mark.parametrize("gain,verdict", [(0.018, "reproduced"), (0.05, "partially"),
                                          (0.0, "not reproduced"), (-0.02, "not reproduced")])
def test_gain_rule(gain, verdict):
    assert _verdicts(gain=gain, sign=0.9, share=0.1, rot_share=0.1)["(a)"] == verdict


@pytest.mark.parametrize("sign,verdict", [(0.995, "reproduced"), (0.9, "partially"),
                                          (0.6, "not reproduced")])
def test_sign_rule(sign, verdict):
    assert _verdicts(gain=0.0, sign=sign, share=0.1, rot_share=0.1)["(b)"] == verdict


@pytest.mark.parametrize("share,rot,verdict", [(0.2, 0.1, "reproduced"), (0.12, 0.1, "partially"),
                                               (0.1, 0.1, "not reproduced"),
                                               (0.08, 0.1, "not reproduced")])
def test_axis_rule_against_the_rotated_control(share, rot, verdict):
    got = pv.verdicts(_res(_rows(0.0, 0.9, share, rot)))[2]
    assert got["verdict"] == verdict
    assert ("not supported" in got["why"]) == (verdict == "not reproduced")


@pytest.mark.parametrize("mlp,verdict", [(None, "not tested"), (0.0, "reproduced"),
                                         (-0.01, "reproduced"), (0.005, "partially"),
                                         (0.02, "not reproduced")])
def test_mlp_rule(mlp, verdict):
    assert _verdicts(gain=0.0, sign=0.9, share=0.1, rot_share=0.1, mlp=mlp)["(d)"] == verdict


def test_states_input_is_judged_when_present():
    rows = _rows(0.018, 0.9, 0.1, 0.1) + _rows(-0.05, 0.9, 0.1, 0.1, inp="signs")
    assert pv.verdicts(_res(rows))[0]["verdict"] == "reproduced"


def test_bootstrap_interval():
    v = np.random.default_rng(0).normal(0.02, 0.01, 30)
    b = pv.bootstrap_mean(v)
    assert b["lo"] < v.mean() < b["hi"] and b["n"] == 30
    assert b == pv.bootstrap_mean(v)  # seeded
    assert pv.bootstrap_mean([0.5, 0.5]) == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 2}


def test_bad_inputs_raise():
    with pytest.raises(InvalidArgument, match="at least 2 finite"):
        pv.bootstrap_mean([0.1])
    with pytest.raises(InvalidArgument, match="at least 2 finite"):
        pv.bootstrap_mean([0.1, math.nan])
    with pytest.raises(InvalidArgument, match="no site reports"):
        pv.verdicts({"reports": []})
    old = _rows(0.0, 0.9, 0.1, 0.1)
    for r in old:
        del r["rot_mass_on_dims"]
    with pytest.raises(InvalidArgument, match="rot_mass_on_dims"):
        pv.verdicts(_res(old))
    with pytest.raises(InvalidArgument, match="no verdict rows"):
        pv.table([])


@pytest.fixture(scope="module")
def catalog():
    return planted.make_catalog(sites=("resid.0", "resid.1"))[0]


def test_sites_come_from_the_anchors_only(catalog):
    # no reading report: the anchors' mean per-dim AUC picks resid.0 (planted) over noise
    sites, how = pick_sites(catalog, None, late_depth=0.5)
    assert sites == ["resid.0", "resid.1"] and "mean per-dim AUC on the anchors" in how
    assert "late site fixed in the config" in how
    for f in catalog.at("resid.1"):  # held-out results cannot move the choice
        f.metrics["held_out_auc"] = 1.0
    assert pick_sites(catalog, None, late_depth=0.5)[0] == sites
    reading = {"e3_selection": {"choice": {"site": "resid.1", "label": "k=32",
                                           "inner_median": 0.9}}}
    sites, how = pick_sites(catalog, reading, late_depth=0.0)
    assert sites == ["resid.1", "resid.0"] and "nested cross-validation on the anchors" in how
    with pytest.raises(InvalidArgument, match="late_depth"):
        pick_sites(catalog, None, late_depth=1.0)


def test_markdown_leads_with_the_verdicts():
    res = _res(_rows(0.018, 0.95, 0.10, 0.09, mlp=0.0))
    rep = res["reports"][0]
    rep["summary"], rep["tables"] = {}, {"signs": "", "states": "| table |\n"}
    res.update(model="m", command="python scripts/reproduce_probes.py", seconds=1.0, vocab=10,
               width=4, n_categories=N, site_choice="resid.0 (test)", mlp_note="-", name="probes",
               settings={"folds": 5, "l2_grid": [1e-4, 1e-1], "inner_folds": 3,
                         "inner_negatives": 8192, "rotation_seed": 0},
               verdicts=pv.verdicts(res))
    page = markdown(res)
    assert page.index("## Verdicts") < page.index("Sites: resid.0 (test)") < page.index("## Summary")
    assert page.count("| (") == 4


def test_the_page_says_when_the_penalty_sits_at_the_grid_edge():
    from experiments.probe_comparison import _grid_edge

    res = {"settings": {"l2_grid": [1e-3, 1e-1]},
           "reports": [{"rows": [{"l2_folds": [0.1, 0.1, 1e-3]}, {"l2_folds": [1e-3]}]}]}
    assert "2 of 4 fold choices are the grid's largest value 0.1" in _grid_edge(res)
    res["reports"][0]["rows"][0]["l2_folds"] = [1e-3]
    assert _grid_edge(res) == ""
