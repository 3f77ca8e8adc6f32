"""``bows train`` resume: atomic checkpoints, refused setting changes, validated files."""
import ast
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import superposition.model as model_mod
from bagofdims.errors import ResumeError, StorageError
from bagofdims.storage import atomic_file, remove_stale_temps
from superposition.data import BowsData, DataConfig, build_data, ensure_data
from superposition.pipeline import FULL, PipelineConfig
from superposition.train import TrainConfig, load_model, train

HERE = Path(__file__).parent
PAD = " filler text so every line passes the fifty character minimum"
# 7 batches an epoch, 28 steps; checkpoints after steps 5, 10, ..., 25
BASE = dict(latent=4, weight_decay=0.5, lr=1e-2, epochs=4, batch_size=32, progress=False,
            checkpoint_every=5, precision="fp32")


def _docs(seed=0):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    rng = np.random.default_rng(seed)
    # 5 lines a document: 4 windows of 2 lines each (windows stay inside a document)
    return [[" ".join(rng.choice(words, 3)) + PAD for _ in range(5)] for _ in range(60)]


def _build(out, seed=0, **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("superposition.data.load_corpus", lambda name: _docs(seed))
        cfg = DataConfig(out=str(out), vocab=60, window=2, **kw)
        build_data(cfg)
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(_build(tmp_path_factory.mktemp("bows") / "data").out)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run: the weights every resumed run must end with."""
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = train(TrainConfig(data=data_dir, out=str(out), **BASE))
    assert summary["steps"] == 28
    return load_model(out)[0]


def _same_weights(run, ref) -> bool:
    model, _ = load_model(run)
    return torch.equal(model.E, ref.E) and torch.equal(model.b, ref.b)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


class _Stop(Exception):
    """Stands for Ctrl-C (a real KeyboardInterrupt would also stop pytest if it escaped)."""


def _interrupt(monkeypatch, at_step: int):
    """Raise :class:`_Stop` inside training step ``at_step`` (4 timing steps come first)."""
    calls = {"n": 0}
    loss = model_mod.BowsModel.loss

    def counted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4 + at_step:
            raise _Stop
        return loss(self, *a, **k)

    monkeypatch.setattr(model_mod.BowsModel, "loss", counted)
    return lambda: monkeypatch.setattr(model_mod.BowsModel, "loss", loss)


def _interrupted_run(monkeypatch, data_dir, out, at_step=12, **over):
    restore = _interrupt(monkeypatch, at_step)
    with pytest.raises(_Stop):
        train(TrainConfig(data=data_dir, out=str(out), **{**BASE, **over}))
    restore()


@pytest.mark.parametrize("target,when,n,resumed_at", [
    ("checkpoint", "before", 1, None),   # inside the first checkpoint's write: start over
    ("checkpoint", "after", 3, 15),      # right after the third checkpoint
    ("checkpoint", "before", 4, 15),     # inside the fourth: the third is still whole
    ("model", "before", 1, 25),          # inside the final model's write
    ("train.json", "after", 1, "done"),  # finished, checkpoint not yet removed
])
def test_sigkill_at_any_point_then_resume_gives_the_uninterrupted_weights(
        data_dir, reference, tmp_path, caplog, target, when, n, resumed_at):
    out = tmp_path / "run"
    child = subprocess.run([sys.executable, str(HERE / "_bows_train_child.py"), data_dir, str(out),
                            json.dumps(BASE), target, when, str(n)],
                           capture_output=True, text=True, cwd=HERE.parent.parent)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with caplog.at_level(logging.INFO, logger="superposition.train"):
        train(TrainConfig(data=data_dir, out=str(out), **BASE))
    # fp32 on one CPU thread is deterministic, so the resumed run must match bit for bit
    assert _same_weights(out, reference)
    assert _leftovers(out) == []  # the killed writer's temporary file is gone
    assert not (out / "checkpoint.safetensors").exists() and (out / "train.json").exists()
    text = caplog.text
    if resumed_at == "done":
        assert "already trained" in text
    elif resumed_at is None:
        assert "resuming" not in text
    else:
        assert f"resuming at step {resumed_at} of 28" in text


@pytest.mark.parametrize("change,named", [
    (dict(lr=2e-2), ["--lr"]),
    (dict(weight_decay=1.0), ["--weight-decay"]),
    (dict(latent=6), ["--latent"]),  # used to be a raw RuntimeError from copy_
    (dict(lr=2e-2, weight_decay=0.1, epochs=5), ["--lr", "--weight-decay", "--epochs"]),
    (dict(batch_size=16), ["--batch-size"]),
    (dict(seed=1), ["--seed"]),
    (dict(relu=False), ["--relu"]),
    (dict(precision="bf16"), ["--precision"]),
])
def test_resume_with_other_settings_is_refused(data_dir, tmp_path, monkeypatch, change, named):
    out = tmp_path / "run"
    _interrupted_run(monkeypatch, data_dir, out)
    before = {f: (out / f).read_bytes() for f in ("config.json", "checkpoint.safetensors")}
    with pytest.raises(ResumeError) as err:
        train(TrainConfig(data=data_dir, out=str(out), **{**BASE, **change}))
    msg = str(err.value)
    assert all(flag in msg for flag in named) and "--overwrite" in msg and "another --out" in msg
    assert {f: (out / f).read_bytes() for f in before} == before  # nothing rewritten


def test_finished_run_is_reused_or_refused(data_dir, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = train(TrainConfig(data=data_dir, out=str(out), **BASE))
    model_bytes = (out / "model.safetensors").read_bytes()
    restore = _interrupt(monkeypatch, 1)  # any training step would raise
    assert train(TrainConfig(data=data_dir, out=str(out), **BASE)) == first
    restore()
    with pytest.raises(ResumeError, match="--lr"):
        train(TrainConfig(data=data_dir, out=str(out), **{**BASE, "lr": 2e-2}))
    assert json.loads((out / "config.json").read_text())["lr"] == BASE["lr"]
    assert (out / "model.safetensors").read_bytes() == model_bytes
    train(TrainConfig(data=data_dir, out=str(out), **{**BASE, "lr": 2e-2}, overwrite=True))
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-2
    assert not _same_weights(out, reference)


def test_settings_that_do_not_change_results_may_differ(data_dir, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted_run(monkeypatch, data_dir, out)
    train(TrainConfig(data=data_dir, out=str(out), **{**BASE, "checkpoint_every": 3, "threads": 1,
                                                      "device": "cpu", "progress": True}))
    assert _same_weights(out, reference)


def test_resume_on_other_data_is_refused(data_dir, tmp_path, monkeypatch):
    data2 = _build(tmp_path / "data2", seed=1).out
    out = tmp_path / "run"
    _interrupted_run(monkeypatch, data_dir, out)
    with pytest.raises(ResumeError, match="contents of the data directory"):
        train(TrainConfig(data=data2, out=str(out), **BASE))


def test_damaged_checkpoint_or_model_is_a_storage_error(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted_run(monkeypatch, data_dir, out)
    ckpt = out / "checkpoint.safetensors"
    raw = bytearray(ckpt.read_bytes())
    raw[-3] ^= 0xFF  # a weight's byte
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="checksum"):
        train(TrainConfig(data=data_dir, out=str(out), **BASE))
    ckpt.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(StorageError, match="not a complete safetensors file"):
        train(TrainConfig(data=data_dir, out=str(out), **BASE))
    ckpt.unlink()  # the documented fix: restart from step 0
    train(TrainConfig(data=data_dir, out=str(out), **BASE))
    model = out / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(StorageError, match="model.safetensors"):
        load_model(out)


def test_damaged_data_is_a_storage_error(tmp_path):
    d = Path(_build(tmp_path / "data").out)
    BowsData(d).split("train")
    f = d / "train.safetensors"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(StorageError, match="train.safetensors.*checksum"):
        BowsData(d).split("train")
    vocab = json.loads((d / "vocab.json").read_text())
    (d / "vocab.json").write_text(json.dumps(vocab[::-1]))
    with pytest.raises(StorageError, match="vocab.json"):
        BowsData(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(StorageError, match="bows data --out"):
        BowsData(d)


def test_data_rebuild_cleans_a_killed_build_and_ensure_data_checks_settings(tmp_path):
    stale = tmp_path / ".data.tmp-k1ll3d_x"
    stale.mkdir()
    (stale / "train.safetensors").write_bytes(b"half")
    cfg = _build(tmp_path / "data")
    assert not stale.exists()
    mtime = (tmp_path / "data" / "meta.json").stat().st_mtime_ns
    assert ensure_data(cfg).vocab_size == BowsData(cfg.out).vocab_size
    assert (tmp_path / "data" / "meta.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(ResumeError, match="window: 3 here, 2"):
        ensure_data(DataConfig(out=cfg.out, vocab=60, window=3))


def test_atomic_file_and_stale_temps(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(f, "w") as h:
            h.write("new, half")
            raise RuntimeError
    assert f.read_text() == "old" and _leftovers(tmp_path) == []
    with atomic_file(f, "w") as h:
        h.write("new")
    assert f.read_text() == "new" and _leftovers(tmp_path) == []
    dead = tmp_path / ".a.json.tmp-999999999"   # no such process
    live = tmp_path / f".a.json.tmp-{os.getpid()}"  # a writer still at work
    old = tmp_path / ".gone.old-999999999"      # killed between atomic_dir's two renames
    dead.write_text("x")
    live.write_text("x")
    old.mkdir()
    remove_stale_temps(tmp_path)
    assert not dead.exists() and live.exists() and (tmp_path / "gone").is_dir() and not old.exists()


def test_messages_go_through_logging(data_dir, tmp_path, caplog):
    for mod in ("pipeline", "train"):
        tree = ast.parse((HERE.parent.parent / "superposition" / f"{mod}.py").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
        assert calls == [], f"print() in superposition/{mod}.py"
    with caplog.at_level(logging.INFO, logger="superposition.train"):
        train(TrainConfig(data=data_dir, out=str(tmp_path / "run"), **BASE))
    assert "ms/step" in caplog.text and "lr*wd*steps" in caplog.text


def test_pipeline_writes_under_runs_by_default():
    assert PipelineConfig().report.startswith("runs/bows/") and FULL["report"].startswith("runs/bows/")
    assert not PipelineConfig().report.startswith("reports/")


def test_pipeline_reuses_only_runs_made_with_its_settings(tmp_path, monkeypatch):
    from superposition.pipeline import run_pipeline

    monkeypatch.setattr("superposition.data.load_corpus", lambda name: _docs())
    cfg = dict(runs=str(tmp_path / "runs"), report=str(tmp_path / "report"), vocab=60, window=2,
               latents="4", weight_decays="4", seeds="0", lr=1e-2, steps=7, batch_size=32,
               synthetic=False, mechanisms=False, workers=1)
    run_pipeline(PipelineConfig(**cfg))
    model = tmp_path / "runs" / "m4_wd4_s0" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    run_pipeline(PipelineConfig(**cfg))
    assert model.stat().st_mtime_ns == stamp  # finished and unchanged: reused, not retrained
    with pytest.raises(ResumeError, match=r"--lr: 0.02 here, 0.01 .*another --out"):
        run_pipeline(PipelineConfig(**{**cfg, "lr": 2e-2}))  # used to reuse the lr 0.01 model silently
    with pytest.raises(ResumeError, match="vocab"):
        run_pipeline(PipelineConfig(**{**cfg, "vocab": 50}))  # used to reuse the other data silently
