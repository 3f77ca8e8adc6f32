"""``bows sweep``: one row per (m, wd, seed), finished runs skipped, changed settings refused,
parallel workers giving the same numbers as one process."""
import csv
import json

import numpy as np
import pytest

import superposition.sweep as sweep_mod
from bagofdims.errors import InvalidArgument, ResumeError
from superposition.corpus import MONTHS
from superposition.sweep import SweepConfig, run_sweep

PAD = " filler text so every line passes the fifty character minimum"
WORDS = MONTHS + ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _docs():
    rng = np.random.default_rng(0)
    return [[" ".join(rng.choice(WORDS, 3)) + PAD for _ in range(3)] for _ in range(80)]


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "sweep"), vocab=60, window=2, latents="3,4", weight_decays="0,0.5", seeds="0,1",
                lr=1e-2, steps=12, batch_size=32, precision="fp32", workers=1, max_windows=100)
    return SweepConfig(**{**base, **kw})


@pytest.fixture
def corpus(monkeypatch):
    monkeypatch.setattr("superposition.data.load_corpus", lambda name: _docs())


def _count_training(monkeypatch):
    calls = []
    real = sweep_mod.train

    def counted(cfg):
        calls.append((cfg.latent, cfg.weight_decay, cfg.seed))
        return real(cfg)

    monkeypatch.setattr(sweep_mod, "train", counted)
    return calls


def test_table_has_one_row_per_run_and_resume_skips_finished(tmp_path, corpus, monkeypatch):
    calls = _count_training(monkeypatch)
    first = run_sweep(_cfg(tmp_path))
    keys = [(r["latent"], r["weight_decay"], r["seed"]) for r in first["rows"]]
    assert sorted(keys) == sorted((m, wd, s) for m in (3, 4) for wd in (0.0, 0.5) for s in (0, 1))
    assert len(set(keys)) == 8 and len(calls) == 8 and first["trained_now"] == 8
    assert all(r["steps"] == 12 for r in first["rows"])
    out = tmp_path / "sweep"
    with open(out / "sweep.csv") as f:
        assert [(int(r["latent"]), float(r["weight_decay"]), int(r["seed"])) for r in csv.DictReader(f)] == keys
    md = (out / "sweep.md").read_text()
    assert sum(line.startswith("| 3 | 0 | 0 |") for line in md.splitlines()) == 1
    summary = {(s["latent"], s["weight_decay"]): s for s in first["summary"]}
    assert len(summary) == 4 and all(s["seeds"] == 2 for s in summary.values())
    vals = [r["val_mse"] for r in first["rows"] if (r["latent"], r["weight_decay"]) == (3, 0.0)]
    assert summary[(3, 0.0)]["val_mse"]["mean"] == pytest.approx(np.mean(vals))
    for name in ("interference_vs_m.png", "effective_rank_vs_decay.png", "r2_vs_m.png"):
        assert (out / name).stat().st_size > 1000

    calls.clear()
    again = run_sweep(_cfg(tmp_path))
    assert calls == [] and again["trained_now"] == 0
    assert again["rows"] == first["rows"]
    grown = run_sweep(_cfg(tmp_path, seeds="0,1,2"))  # a longer seed list trains only the new runs
    assert sorted(calls) == [(3, 0.0, 2), (3, 0.5, 2), (4, 0.0, 2), (4, 0.5, 2)]
    assert len(grown["rows"]) == 12


def test_changed_settings_are_refused(tmp_path, corpus):
    run_sweep(_cfg(tmp_path, latents="3", weight_decays="0", seeds="0"))
    with pytest.raises(ResumeError, match=r"--lr: 0.02 here, 0.01 in the saved sweep.*another --out"):
        run_sweep(_cfg(tmp_path, latents="3", weight_decays="0", seeds="0", lr=2e-2))
    with pytest.raises(ResumeError, match="--steps: 13 here, 12"):
        run_sweep(_cfg(tmp_path, latents="3", weight_decays="0", seeds="0", steps=13))
    with pytest.raises(ResumeError, match="window: 3 here, 2"):
        run_sweep(_cfg(tmp_path, latents="3", weight_decays="0", seeds="0", window=3))
    # a run directory holding another run under this sweep's name is refused, not reused
    run = tmp_path / "sweep" / "m3_wd0_s0" / "config.json"
    saved = json.loads(run.read_text())
    run.write_text(json.dumps({**saved, "batch_size": 64}))
    with pytest.raises(ResumeError, match="--batch-size: 32 here, 64"):
        run_sweep(_cfg(tmp_path, latents="3", weight_decays="0", seeds="0"))


def test_bad_grid_is_an_invalid_argument(tmp_path, corpus):
    for bad in (dict(latents="3,x"), dict(seeds=""), dict(weight_decays="1,1"), dict(workers=0)):
        with pytest.raises(InvalidArgument):
            run_sweep(_cfg(tmp_path, **bad))


def test_parallel_workers_give_the_sequential_numbers(tmp_path, corpus):
    kw = dict(latents="3", weight_decays="0.5", seeds="0,1")
    seq = run_sweep(_cfg(tmp_path / "a", **kw))["rows"]
    par = run_sweep(_cfg(tmp_path / "b", workers=2, **kw))["rows"]
    for a, b in zip(seq, par):  # fp32 on one thread is deterministic, wherever it runs
        assert a["val_mse"] == b["val_mse"] and a["effective_rank"] == b["effective_rank"]
