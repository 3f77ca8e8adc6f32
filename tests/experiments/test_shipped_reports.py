"""Each report writer turns the shipped JSON back into the shipped markdown page, so the pages
under reports/ are what the experiments' writers produce from their numbers."""

import json
from pathlib import Path

import pytest

from experiments import (category_coverage, causal_report, input_comparison, mi_report,
                         probe_comparison, reading_report)

REPORTS = Path(__file__).resolve().parents[2] / "reports"
CAUSAL_FILES = {"depth": "causal_depth.png", "specificity": "causal_specificity.png",
                "e5": "causal_kv.png", "e6": "causal_ffn.png", "controls": "causal_controls.png"}


WRITERS = {
    "reading": reading_report.markdown,
    "probes": probe_comparison.markdown,
    "inputs": input_comparison.markdown,
    "categories": category_coverage.markdown,
    "causal": lambda res: causal_report.markdown(res, CAUSAL_FILES),
    "mi": mi_report.markdown,
}
CASES = [(model.name, stem) for model in sorted(REPORTS.iterdir()) if model.is_dir()
         for stem in WRITERS if (model / f"{stem}.json").exists()]


@pytest.mark.parametrize("model,stem", CASES)
def test_writer_reproduces_the_shipped_page(model, stem):
    res = json.loads((REPORTS / model / f"{stem}.json").read_text())
    page = (REPORTS / model / f"{stem}.md").read_text()
    assert WRITERS[stem](res) == page


def test_every_shipped_model_report_is_covered():
    stems = {(m, s) for m, s in CASES}
    assert {("smollm2", s) for s in WRITERS} <= stems
    assert {("gemma3-270m", s) for s in ("reading", "probes", "categories", "causal")} <= stems


@pytest.mark.parametrize("stem,key", [("reading", "e3_selection"), ("probes", "verdicts")])
def test_a_result_from_before_the_verdict_tables_is_refused(stem, key):
    """Every shipped page is on the current protocol; an older result file is refused with the
    command to rerun, not rendered in an old layout."""
    from bagofdims.errors import InvalidArgument

    res = json.loads((REPORTS / "smollm2" / f"{stem}.json").read_text())
    del res[key]
    with pytest.raises(InvalidArgument, match=f"rerun scripts/reproduce_{stem}.py"):
        WRITERS[stem](res)


def test_a_causal_result_without_control_distributions_is_refused():
    from bagofdims.errors import InvalidArgument

    res = json.loads((REPORTS / "smollm2" / "causal.json").read_text())
    del res["e7"]["distributions"]
    with pytest.raises(InvalidArgument, match="rerun scripts/reproduce_causal.py"):
        WRITERS["causal"](res)
