"""The vision experiment on a tiny config (seconds): data, training, the detection rule and the
report files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bagofdims.errors import InvalidArgument
from experiments import vision

QUICK = ["--per-class", "30", "--epochs", "2", "--hidden", "16", "--layers", "2",
         "--intermediate", "24", "--n-draws", "5", "--n-boot", "50"]


def test_digits_are_upsampled_uint8_with_a_stratified_disjoint_split():
    d = vision.digits(size=16, per_class=20, test_share=0.5, seed=0)
    assert d["images"].shape == (200, 16, 16, 3) and d["images"].dtype == np.uint8
    assert d["images"].max() == 255 and np.array_equal(d["images"][..., 0], d["images"][..., 2])
    # nearest upsampling: each 2x2 block is one source pixel
    assert np.array_equal(d["images"][:, ::2, ::2], d["images"][:, 1::2, 1::2])
    assert not set(d["train"]) & set(d["test"]) and len(d["train"]) + len(d["test"]) == 200
    assert np.bincount(d["labels"][d["test"]]).tolist() == [10] * 10
    again = vision.digits(size=16, per_class=20, test_share=0.5, seed=0)
    assert np.array_equal(again["test"], d["test"])
    with pytest.raises(InvalidArgument, match="multiple of 8"):
        vision.digits(size=12)


def test_training_lowers_the_loss_and_beats_chance():
    cfg = vision.VisionConfig(per_class=30, hidden=32, layers=2, intermediate=48)
    d = vision.digits(cfg.size, cfg.per_class, 0.3, 0)
    model, proc = vision.make_model(cfg)
    x, y = vision.pixels(proc, d["images"]), torch.as_tensor(d["labels"])
    losses = vision.train(model, x, y, epochs=60, batch_size=16, lr=5e-3, seed=0)
    assert losses[-1] < 0.5 * losses[0]
    assert vision.accuracy(model, x, y) > 0.5  # chance is 0.1
    assert not model.training


def test_detection_rule():
    assert vision.detect({"held_out_auc": 0.9, "p_listed": 0.2}, 0.9) == (True, False)
    assert vision.detect({"held_out_auc": 0.89, "p_listed": 0.02}, 0.9) == (False, True)
    table = {f"resid.{i}": {"detected": k, "n_classes": 10} for i, k in enumerate([8, 7, 10])}
    assert vision.blocks_showing(table, 3, 0.8) == 2


def test_main_writes_the_report_with_verdict_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = vision.main(QUICK)
    out = tmp_path / "runs" / "vision-digits" / "reports"  # never reports/ unless asked
    assert not (tmp_path / "reports").exists()
    saved = json.loads((out / "vision.json").read_text())
    assert saved["verdict"] == res["verdict"] and (out / "vision_layers.png").stat().st_size > 0
    assert list(saved["layers"]["trained"]) == ["embed", "resid.0", "resid.1", "final"]
    for name in ("trained", "random_init"):
        for row in saved["layers"][name].values():
            assert row["n_classes"] == 10 and 0 <= row["detected"] <= 10
            for m in row["classes"].values():  # evidence ran: CI around the AUC, a p-value
                assert m["held_out_auc_lo"] - 1e-9 <= m["held_out_auc"] <= \
                    m["held_out_auc_hi"] + 1e-9
                assert 0 < m["p_listed"] <= 1
    md = (out / "vision.md").read_text()
    assert md.index("## Verdict") < md.index("## What this can and cannot show") < \
        md.index("## Per layer")
    assert "DINOv2 (paper) | 9/12" in md and "ViT-Base (paper) | 11/12" in md
    assert f"| {res['verdict']['trained']}/2 |" in md


def test_write_reports_and_out_are_exclusive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgument, match="not both"):
        vision.main([*QUICK, "--write-reports", "--out", "x"])


def test_the_shipped_page_is_what_the_writer_makes_of_its_json():
    shipped = Path(__file__).resolve().parents[2] / "reports" / "vision-digits"
    if not (shipped / "vision.json").exists():
        pytest.skip("no shipped vision report")
    res = json.loads((shipped / "vision.json").read_text())
    assert vision.markdown(res, "vision_layers.png") == (shipped / "vision.md").read_text()
