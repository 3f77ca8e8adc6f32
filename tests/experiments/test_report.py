"""Shared report helpers (experiments.report) and the output-folder rule (experiments.runs)."""

import json
import math
from pathlib import Path

import pytest
import tyro

from bagofdims.errors import InvalidArgument
from experiments import report
from experiments.runs import REPORTS, RunConfig, model_tag, output_dir


# -- where a run writes ------------------------------------------------------------------------
def test_default_output_is_the_run_folder_not_the_tracked_reports():
    assert output_dir("smollm2") == Path("runs/smollm2/reports")
    assert output_dir("smollm2", runs="/tmp/r") == Path("/tmp/r/smollm2/reports")
    assert output_dir("smollm2", write_reports=True) == REPORTS / "smollm2" == Path("reports/smollm2")
    assert output_dir("smollm2", out="elsewhere/x") == Path("elsewhere/x")
    with pytest.raises(InvalidArgument, match="not both"):
        output_dir("smollm2", out="x", write_reports=True)


def test_model_tag_keeps_paths_and_hub_ids_inside_runs():
    assert model_tag("smollm2") == "smollm2"
    assert model_tag("HuggingFaceTB/SmolLM2-135M") == "SmolLM2-135M"
    assert model_tag("/abs/path/to/tiny-llama/") == "tiny-llama"
    # an absolute model path must not turn <runs>/<model> into the model's own folder
    assert output_dir("/abs/path/to/tiny-llama") == Path("runs/tiny-llama/reports")
    with pytest.raises(InvalidArgument, match="run folder"):
        model_tag("/")


def test_run_config_flags():
    cfg = tyro.cli(RunConfig, args=["--model", "gemma3-270m"])
    assert (cfg.run_dir, cfg.out_dir) == (Path("runs/gemma3-270m"),
                                          Path("runs/gemma3-270m/reports"))
    cfg = tyro.cli(RunConfig, args=["--model", "gemma3-270m", "--write-reports"])
    assert cfg.out_dir == Path("reports/gemma3-270m")
    cfg = tyro.cli(RunConfig, args=["--out", "reports/smollm2", "--runs", "r"])
    assert (cfg.run_dir, cfg.out_dir) == (Path("r/smollm2"), Path("reports/smollm2"))
    with pytest.raises(InvalidArgument):
        tyro.cli(RunConfig, args=["--out", "x", "--write-reports"]).out_dir


# -- files -------------------------------------------------------------------------------------
def test_write_json_text_and_report_are_whole_files(tmp_path):
    res = {"a": 1.5, "b": [1, 2], "nested": {"c": "x"}}
    path = report.write_json(tmp_path / "new" / "r.json", res)
    assert path == tmp_path / "new" / "r.json"
    assert json.loads(path.read_text()) == res
    report.write_text(path, "replaced\n")
    assert path.read_text() == "replaced\n"
    md = report.write_report(tmp_path / "out", "reading", res, "# title\n")
    assert md == tmp_path / "out" / "reading.md" and md.read_text() == "# title\n"
    assert json.loads((tmp_path / "out" / "reading.json").read_text()) == res
    # nothing temporary is left beside the files
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reading.json", "reading.md"]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["r.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = report.write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        report.write_json(path, {"bad": object()})

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", crash)  # dies after the temp file was written
    with pytest.raises(OSError, match="disk full"):
        report.write_json(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_save_figure_writes_a_png_and_closes_it(tmp_path):
    plt = report.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = report.save_figure(fig, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


# -- numbers -----------------------------------------------------------------------------------
def test_summary_quartiles_and_nan():
    s = report.summary([4.0, 1.0, float("nan"), 3.0, 2.0])
    assert s["n"] == 4 and s["median"] == 2.5 and s["mean"] == 2.5
    assert s["q25"] == pytest.approx(1.25) and s["q75"] == pytest.approx(3.75)
    one = report.summary([0.7])
    assert one == {"median": 0.7, "mean": 0.7, "n": 1, "q25": 0.7, "q75": 0.7}
    empty = report.summary([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["median"])


def test_fmt_and_command():
    assert report.fmt(0.12345) == "0.123"
    assert report.fmt(0.12345, 1) == "0.1"
    assert report.fmt(0.01, 4, sign=True) == "+0.0100"
    assert report.fmt(-0.5, 2, sign=True) == "-0.50"
    assert report.fmt(None) == report.fmt(float("nan")) == "–"
    cmd = report.command("scripts/reproduce_reading.py", ["--model", "a b", "--write-reports"])
    assert cmd == "python scripts/reproduce_reading.py --model 'a b' --write-reports"


def test_entry_turns_a_refusal_into_one_line(capsys, monkeypatch):
    from experiments.runs import entry

    monkeypatch.delenv("BAGOFDIMS_DEBUG", raising=False)
    seen = []
    assert entry(seen.append, ["--x"]) == 0 and seen == [["--x"]]

    def refuse(argv):
        output_dir("m", out="x", write_reports=True)

    assert entry(refuse) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: give either --out DIR or --write-reports" in err
    assert "Traceback" not in err

    def bug(argv):
        raise RuntimeError("a bug keeps its traceback")

    with pytest.raises(RuntimeError):
        entry(bug)
    monkeypatch.setenv("BAGOFDIMS_DEBUG", "1")
    with pytest.raises(InvalidArgument):
        entry(refuse)


def test_verdict_row_escapes_pipes_inside_cells():
    from experiments.report import verdict_row

    row = verdict_row({"claim": "top-|h| dims", "ours": "a \\| b", "verdict": "partially",
                       "why": "mean |h|"})
    assert row == "| top-\\|h\\| dims | a \\| b | **partially** | mean \\|h\\| |"
    assert len(row.replace("\\|", "").strip("|").split("|")) == 4  # four cells
