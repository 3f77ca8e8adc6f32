"""E9 done properly (experiments.mi, experiments.mi_report, scripts/reproduce_mi.py) on planted
data and a tiny random-weight model."""

import json
import math
from pathlib import Path

import pytest
import tiny
import torch
import transformers as T

from bagofdims.errors import InvalidArgument
from bagofdims.signs.cache import SignCache
from experiments import mi, mi_report


def _sparse(n=2000, d=16, seed=0):
    """Axis-aligned sparse codes: each dim fires alone (independently), rarely and strongly."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.1).float() * torch.randn(n, d, generator=g).abs() * 3


def test_rotated_control_of_axis_aligned_sparse_codes_shares_more():
    res = mi.site_mi(_sparse(), seed=0, repeats=6)
    json.dumps(res)
    # independent dims: the corrected MI is ~0, within the sampling spread of the shuffles
    assert abs(res["mm"]["mean"]) < 3 * res["shuffled"]["mm_mean_sd"]
    assert res["plugin"]["mean"] > res["mm"]["mean"]
    assert abs(res["centred"]["mm"]["mean"]) < 3 * res["shuffled"]["mm_mean_sd"]
    # a rotation mixes the rare strong events into every dim: its signs share information
    assert res["rotated"]["mm"]["mean"] > 100 * res["shuffled"]["mm_mean_sd"]
    assert res["basis"]["verdict"] == "lower than rotated" and res["basis"]["special"]
    assert res["in_paper_range"] is False  # ~0 bits is below the paper's range


def test_gaussian_codes_look_the_same_in_any_basis():
    x = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    res = mi.site_mi(x, seed=0, repeats=8)
    assert res["basis"]["verdict"] == "indistinguishable"
    assert abs(res["basis"]["gap"]) <= res["basis"]["threshold"]
    assert res["mm"]["pairs_over"] == 0 and res["rotated"]["mm"]["pairs_over"] == 0


def test_planted_pair_tops_the_list_with_its_rates():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1500, 10, generator=g)
    x[:, 7] = x[:, 2] + 0.2 * torch.randn(1500, generator=g)
    x[:, 4] = 5.0  # a constant-sign dim
    res = mi.mi_by_site({"a": x}, seed=3, repeats=4)["a"]
    top = res["top_pairs"][0]
    assert (top["i"], top["j"]) == (2, 7) and top["mm"] > 0.5
    assert top["rate_i"] == pytest.approx(float((x[:, 2] > 0).float().mean()))
    assert top["both"] == pytest.approx(float(((x[:, 2] > 0) & (x[:, 7] > 0)).float().mean()))
    assert len(res["top_pairs"]) == 5 and res["mm"]["pairs_over"] == 1
    assert res["constant_dims"] == 1 and res["mm"]["max"] == pytest.approx(top["mm"])
    assert res["excess"]["plugin"] == pytest.approx(res["plugin"]["mean"]
                                                    - res["shuffled"]["plugin_mean"])


def test_standardised_control_differs_only_in_basis():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 6, generator=g) * torch.tensor([1.0, 100.0, 0.1, 3.0, 1.0, 1.0]) + 7.0
    x[:, 5] = 2.0  # a constant value stays 0, not NaN
    z = mi.standardise(x)
    assert torch.allclose(z[:, :5].mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z[:, :5].std(0, correction=0), torch.ones(5, dtype=torch.float64))
    assert torch.equal(z[:, 5], torch.zeros(500, dtype=torch.float64))


def test_bad_states_are_refused():
    with pytest.raises(InvalidArgument, match="n >= 2"):
        mi.site_mi(torch.randn(1, 5))
    with pytest.raises(InvalidArgument, match="d >= 2"):
        mi.mi_by_site({"a": torch.randn(50, 1)})
    x = torch.randn(50, 4)
    x[3, 2] = float("inf")
    with pytest.raises(InvalidArgument, match="NaN or inf"):
        mi.site_mi(x)
    x[3, 2] = float("nan")
    with pytest.raises(InvalidArgument, match="NaN or inf"):
        mi.mi_by_site({"a": x})
    with pytest.raises(InvalidArgument, match="at least one"):
        mi.mi_by_site({})


@pytest.fixture(scope="module")
def model():
    return tiny.make("llama")


@pytest.fixture(scope="module")
def cache(model):
    return SignCache.build(model, tiny.tokenizer(), sites=["resid.*", "final"], progress=False)


def test_type_level_mi_on_a_tiny_cache(cache):
    res = mi.type_level_mi(cache, ["resid.0", "final"], repeats=2)
    assert list(res) == ["resid.0", "final"]
    for r in res.values():
        assert r["n"] == len(cache) and r["d"] == tiny.D
        nums = [r["plugin"]["mean"], r["mm"]["mean"], r["mm"]["max"], r["shuffled"]["mm_mean"]]
        assert all(math.isfinite(v) for v in nums)
    signs = cache.signs("final") > 0
    assert res["final"]["top_pairs"][0]["rate_i"] == pytest.approx(
        float(signs[:, res["final"]["top_pairs"][0]["i"]].float().mean()))
    with pytest.raises(InvalidArgument, match="not in the cache"):
        mi.type_level_mi(cache, ["resid.9"])


def _result(type_level=True):
    pos = {"s0": mi.site_mi(_sparse(1000, 8, 5), seed=0, repeats=3),
           "s1": mi.site_mi(torch.randn(1000, 8, generator=torch.Generator().manual_seed(6)),
                            seed=0, repeats=3)}
    res = {"model": "planted", "command": "python scripts/reproduce_mi.py", "seconds": 1.0,
           "sites": list(pos), "n_positions": 1000, "n_texts": 3, "seed": 0, "repeats": 3,
           "type_repeats": 2, "position": pos, "type_level": None,
           "type_level_note": "not computed: no cache at x; build one with y"}
    if type_level:
        res["type_level"] = {"s0": mi.estimates(_sparse(4000, 8, 7), repeats=2)}
        res["type_level_note"] = "Cache x."
    return res


def test_report_leads_with_four_verdict_rows(tmp_path):
    res = _result()
    rows = mi_report.verdicts(res)
    assert len(rows) == 4
    assert ["0.0004–0.0051" in rows[0]["claim"], "type-level" in rows[1]["claim"],
            "no pair above 0.1" in rows[2]["claim"], "basis" in rows[3]["claim"]] == [True] * 4
    # planted: both sites' corrected means are ~0 (below the range), no pair above 0.1, the
    # sparse site is lower than its rotated control and the Gaussian one indistinguishable
    assert [r["verdict"] for r in rows] == ["not reproduced", "not reproduced", "reproduced",
                                            "partially"]
    md_path = mi_report.write(tmp_path, res)
    md = md_path.read_text()
    assert md.index("## Verdicts") < md.index("## Position level")
    for r in rows:
        assert f"| {r['claim']} | {r['ours']} | **{r['verdict']}** |" in md
    assert "python scripts/reproduce_mi.py" in md
    assert json.loads((tmp_path / "mi.json").read_text())["position"]["s0"]["n"] == 1000
    missing = _result(type_level=False)
    row = mi_report.verdicts(missing)[1]
    assert row["verdict"] == "not tested" and "no cache at x" in row["why"]
    assert "Not computed: not computed: no cache" not in mi_report.markdown(missing)
    assert "no cache at x; build one with y" in mi_report.markdown(missing)


@pytest.fixture(scope="module")
def script():
    from experiments import mi_run

    return mi_run


def test_script_writes_the_page_with_and_without_a_cache(tmp_path, monkeypatch, script, capsys):
    model_dir = tmp_path / "tiny-llama"
    model = tiny.make("llama")
    model.save_pretrained(model_dir)
    tok = tiny.tokenizer()
    tok.save_pretrained(model_dir)
    monkeypatch.chdir(tmp_path)
    args = ["--model", str(model_dir), "--positions", "40", "--texts", "6", "--repeats", "2",
            "--type-repeats", "2"]
    res = script.main(args)
    out = Path("runs") / "tiny-llama" / "reports"
    assert sorted(p.name for p in out.iterdir()) == ["mi.json", "mi.md"]
    assert f"wrote {out / 'mi.md'}" in capsys.readouterr().out
    assert res["sites"] == ["resid.0", "resid.1", "resid.2", "final"]
    assert set(res["position"]) == set(res["sites"]) and res["n_positions"] == 40
    md = (out / "mi.md").read_text()
    assert f"no cache at {Path('runs') / 'tiny-llama' / 'cache'}" in md and "bagofdims capture" in md
    assert "python scripts/reproduce_mi.py --model" in md and res["seconds"] >= 0

    loaded = T.AutoModelForCausalLM.from_pretrained(model_dir)
    SignCache.build(loaded, T.AutoTokenizer.from_pretrained(model_dir), sites=["resid.1", "final"],
                    progress=False).save(tmp_path / "c")
    res = script.main(args + ["--cache", "c", "--out", "page"])
    assert list(res["type_level"]) == ["resid.1", "final"]
    assert "resid.0, resid.2" in res["type_level_note"]
    assert mi_report.verdicts(res)[1]["verdict"] != "not tested"
    assert Path("page/mi.md").exists() and not Path("reports").exists()
    with pytest.raises(InvalidArgument, match="at least 2"):
        script.main(args + ["--repeats", "1"])
    with pytest.raises(InvalidArgument, match="not both"):
        script.main(args + ["--out", "x", "--write-reports"])
