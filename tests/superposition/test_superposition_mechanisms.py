"""The mechanism analyses of a tiny trained run end to end: JSON, figures and report section."""
import json

import numpy as np
import pytest

from superposition.data import DataConfig, build_data
from superposition.mechanisms_report import MechanismsConfig, analyze_mechanisms, markdown_section
from superposition.train import TrainConfig, train

PAD = " filler text so every line passes the fifty character minimum"
PLACES = ["France", "Paris", "Germany", "Berlin", "Italy", "Rome", "Spain", "Madrid", "Japan", "Tokyo",
          "China", "India", "Brazil", "Canada", "Mexico", "Egypt", "Kenya", "Peru", "Chile", "Norway",
          "Sweden", "Poland", "Greece", "Athens", "Turkey"]


def _docs():
    rng = np.random.default_rng(0)
    words = PLACES + [str(i) for i in range(1, 26)] + ["music", "band", "song", "vote", "party"]
    return [[" ".join(rng.choice(words, 4)) + PAD for _ in range(3)] for _ in range(150)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mech")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("superposition.data.load_corpus", lambda name: _docs())
        build_data(DataConfig(out=str(root / "data"), vocab=200, window=2))
    train(TrainConfig(data=str(root / "data"), out=str(root / "run"), latent=16, weight_decay=0.1, lr=1e-2,
                      epochs=3, batch_size=64, progress=False, precision="fp32"))
    return root


def test_analyze_mechanisms_writes_metrics_figures_and_section(run):
    out = run / "report"
    cfg = MechanismsConfig(run=str(run / "run"), out=str(out), top_words=100, pair_words=60, value_null=5,
                           lm_report="", synthetic_steps=100, shape_shuffles=10, bridge_anchors=3)
    m = analyze_mechanisms(cfg)
    saved = json.loads((out / "mechanisms.json").read_text())
    assert saved["interference"]["words"] == m["interference"]["words"] > 0
    for part in ("interference", "values", "antipodal", "shapes"):
        assert (out / m[part]["figure"]).stat().st_size > 1000
    assert m["values"]["numbers"]["n_words"] == 25 and "value" in m["values"]["numbers"]
    if "skipped" not in m["values"]["places"]:
        assert m["values"]["places"]["n_words"] >= 20
    assert {r["structure"] for r in m["shapes"]["runs"]} == {"figure8", "sphere"}
    assert m["bridge"]["lm"] is None
    text = markdown_section(saved)
    for heading in ("Constructive interference", "Value coding", "Antipodal pairs", "Figure-8 and sphere", "Bridge"):
        assert f"### {heading}" in text
    assert "constructive_interference.png" in text and "| numbers | value | 25 |" in text
