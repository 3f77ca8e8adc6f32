"""The experiments' entry points on a tiny random-weight model: where each writes (the run folder
by default, the tracked reports/ only with --write-reports), that it says so, and that the
report numbers do not depend on where they are written."""

import json
from pathlib import Path

import pytest
import tiny
import transformers as T

from bagofdims.errors import InvalidArgument
from bagofdims.signs.cache import SignCache
from experiments import category_coverage, input_comparison, probe_comparison, reading

VOCAB = 400  # room for two categories of 70 single tokens (50 anchors + held-out members)
CATEGORIES = {"low": [f"w{i}" for i in range(10, 80)], "high": [f"w{i}" for i in range(100, 170)]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    T.set_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**{**tiny._DECODER, "vocab_size": VOCAB})).eval()
    model.save_pretrained(path)
    tiny.tokenizer(VOCAB).save_pretrained(path)
    return path


@pytest.fixture
def work(tmp_path, monkeypatch, model_dir):
    """A fresh working folder (runs/ and reports/ are relative to it) with a category file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cats.json").write_text(json.dumps(CATEGORIES))
    return tmp_path



def test_coverage_writes_the_run_folder_unless_asked_for_reports(work, model_dir, capsys):
    tag = model_dir.name
    model = T.AutoModelForCausalLM.from_pretrained(model_dir)
    tok = T.AutoTokenizer.from_pretrained(model_dir)
    SignCache.build(model, tok, sites=["resid.*"], progress=False).save(work / "runs" / tag / "cache")
    args = ["--model", str(model_dir), "--sets", "cats.json", "--forms", "initial", "--threads", "1"]

    res = category_coverage.main(args)
    run_dir = Path("runs") / tag / "reports"
    assert sorted(p.name for p in run_dir.iterdir()) == ["categories.json", "categories.md"]
    assert not (work / "reports").exists()  # the tracked reports are left alone
    assert f"wrote {run_dir / 'categories.md'}" in capsys.readouterr().out
    row = res["rows"][0]
    assert (row["usable"], row["categories"], list(row["sites"])) == (2, 2, ["resid.0"])
    assert res["command"] == "python scripts/category_coverage.py " + " ".join(args)
    assert json.loads((run_dir / "categories.json").read_text())["rows"] == res["rows"]

    shipped = category_coverage.main(args + ["--write-reports"])
    reports = Path("reports") / tag
    assert sorted(p.name for p in reports.iterdir()) == ["categories.json", "categories.md"]
    assert f"wrote {reports / 'categories.md'}" in capsys.readouterr().out
    assert shipped["rows"] == res["rows"]  # same numbers wherever they are written
    assert "--write-reports" in (reports / "categories.md").read_text()

    category_coverage.main(args + ["--out", "elsewhere", "--sites", "resid.1", "resid.2"])
    got = json.loads(Path("elsewhere/categories.json").read_text())
    assert list(got["rows"][0]["sites"]) == ["resid.1", "resid.2"]
    with pytest.raises(InvalidArgument, match="not both"):
        category_coverage.main(args + ["--out", "x", "--write-reports"])


def test_coverage_picks_the_reading_site_chosen_on_anchors_never_on_held_out(tmp_path):
    report = tmp_path / "reading.json"
    e3 = {"resid.0": {"held_out_auc": {"median": 0.7}, "mean_dim_auc": 0.8},
          "resid.4": {"held_out_auc": {"median": 0.9}, "mean_dim_auc": 0.6}}
    report.write_text(json.dumps({"e3": e3}))
    sites, rule = category_coverage.default_sites(tmp_path / "missing.json", report)
    assert sites == ["resid.0"] and "anchors" in rule  # not resid.4, the best held-out site
    report.write_text(json.dumps({"e3": e3, "e3_selection": {"choice": {"site": "resid.4"}}}))
    sites, rule = category_coverage.default_sites(report)
    assert sites == ["resid.4"] and "nested cross-validation" in rule
    assert category_coverage.default_sites(tmp_path / "missing.json")[0] == ["resid.0"]


def test_reading_then_probes_into_the_run_folder(work, model_dir, capsys):
    tag = model_dir.name
    res = reading.main(["--model", str(model_dir), "--positions", "40", "--seeds", "6",
                        "--texts", "20", "--categories", "cats.json"])
    run = Path("runs") / tag
    assert (run / "cache" / "meta.json").exists() and (run / "catalog").is_dir()
    out = run / "reports"
    assert sorted(p.name for p in out.iterdir()) == ["reading.json", "reading.md",
                                                     "reading_auc_mi.png", "reading_layers.png"]
    assert not (work / "reports").exists()
    assert f"wrote {out / 'reading.md'}" in capsys.readouterr().out
    saved = json.loads((out / "reading.json").read_text())
    assert saved["sites"] == ["resid.0", "resid.1", "resid.2", "final"]
    assert saved["categories"]["used"] == 2 and saved["n_positions"] == 40
    assert saved["e3"]["resid.0"]["n_categories"] == 2
    assert saved["cache_input"]["bos"] is True and saved["cache_input"]["bos_token"] == "<bos>"
    assert list(saved["e8"]) == ["resid.0", "resid.2", "final"]
    assert saved["e3"] == json.loads(json.dumps(res["e3"]))
    md = (out / "reading.md").read_text()
    assert md.startswith(f"# Reading experiments on {model_dir}")
    assert "python scripts/reproduce_reading.py --model" in md

    # E4 reads the cache and catalog the reading run left in the run folder
    probes = probe_comparison.main(["--model", str(model_dir), "--inputs", "signs", "--mlp", "0",
                                    "--folds", "2", "--threads", "1", "--sites", "resid.1"])
    assert sorted(p.name for p in out.glob("probes.*")) == ["probes.json", "probes.md",
                                                             "probes.png"]
    assert f"wrote {out / 'probes.md'}" in capsys.readouterr().out
    (rep,) = probes["reports"]
    assert rep["site"] == "resid.1" and set(rep["summary"]) == {"signs"}
    assert probes["n_categories"] == 2


def test_input_comparison_writes_where_told(work, model_dir, capsys):
    res = input_comparison.main(["--model", str(model_dir), "--sites", "resid.0", "resid.2",
                                 "--categories", "cats.json", "--pairs", "64", "--out", "cmp"])
    assert sorted(p.name for p in Path("cmp").iterdir()) == ["inputs.json", "inputs.md",
                                                             "inputs.png"]
    assert not Path("runs").exists() and not Path("reports").exists()
    assert "wrote cmp/inputs.md" in capsys.readouterr().out
    # the tiny tokenizer's BOS is its document start, so two policies: alone and after <bos>
    assert list(res["policies"]) == ["alone", "document start"]
    alone, start = res["policies"]["alone"], res["policies"]["document start"]
    assert (alone["input"], alone["bos_id"]) == ("[token]", None)
    assert (start["input"], start["bos_id"]) == ("[<bos>, token]", 1)
    assert res["sites"] == ["resid.0", "resid.2"] and res["n_categories"] == 2


def test_probes_without_a_reading_run_say_what_to_run(work, model_dir):
    with pytest.raises(FileNotFoundError, match="reproduce_reading.py"):
        probe_comparison.main(["--model", str(model_dir), "--inputs", "signs"])
