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


def _reading(res):
    # pages written before the run recorded its command, and before bagofdims.prefix became
    # bagofdims.inputs
    res.setdefault("command", f"python scripts/reproduce_reading.py --model {res['model']}")
    return reading_report.markdown(res).replace("bagofdims.inputs", "bagofdims.prefix")


WRITERS = {
    "reading": _reading,
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
    assert WRITERS[stem](res) == page.replace("bagofdims.inputs", "bagofdims.prefix")


def test_every_shipped_model_report_is_covered():
    stems = {(m, s) for m, s in CASES}
    assert {("smollm2", s) for s in WRITERS} <= stems
    assert {("gemma3-270m", s) for s in ("reading", "probes", "categories", "causal")} <= stems
