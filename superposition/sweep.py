"""``bows sweep``: latent width m x weight decay x seeds on one data set, resumable and parallel.

Every run lives in ``OUT/m{m}_wd{wd}_s{seed}`` (a normal ``bows train`` run directory plus
``stats.json``, the run's row of the table). A run whose ``train.json`` and ``stats.json`` exist
under the same settings is skipped; an interrupted one resumes from its checkpoint. The settings
shared by all runs are recorded in ``OUT/sweep.json``: a sweep under other shared settings is
refused (the m / wd / seed lists may grow or shrink: each run checks its own settings).

Runs go to a pool of processes (``workers``), each with one torch / BLAS thread, because on a
small CPU several single-threaded runs beat one multi-threaded run of small matmuls.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoint import refuse_changes
from .data import BowsData, DataConfig, ensure_data
from .model import resolve_dtype
from .train import TrainConfig, load_model, read_config, run_settings, train
from bagofdims.errors import InvalidArgument, ResumeError
from bagofdims.storage import atomic_file, remove_stale_temps, write_json

log = logging.getLogger(__name__)

STATS_FORMAT = "bows-stats/1"
REFERENCE_DECAY_BUDGET = 5e-4 * 4 * 31_700  # lr x wd x steps of the reference full run (~63)


@dataclass
class SweepConfig:
    """Settings of ``bows sweep`` (every field is also a CLI flag)."""
    out: str = "runs/bows/sweep"
    """Sweep directory: data/, one run directory per (m, wd, seed), sweep.csv / .json / .md, plots."""
    corpus: str = "default"
    """Text source, as `bows data --corpus`."""
    vocab: int = 3000
    """Vocabulary size in words (at most the corpus' distinct words)."""
    window: int = 10
    """Lines (paragraphs) per bag-of-words window, inside one document."""
    latents: str = "50,100,200,400"
    """Comma list of latent widths m."""
    weight_decays: str = "0,1,4"
    """Comma list of AdamW weight decays; with the default lr and steps, wd 1 and 4 give the
    reference's decay budgets lr x wd x steps (15.9 and 63.4)."""
    seeds: str = "0,1,2"
    """Comma list of seeds (initial weights and batch order; the data split is the same for all)."""
    lr: float = 5e-3
    """Peak AdamW learning rate, cosine-decayed to 0 over --steps."""
    steps: int = 3170
    """Optimiser steps of every run (lr x steps = 15.85, the reference's 5e-4 x 31.7k)."""
    batch_size: int = 512
    """Windows per optimiser step."""
    precision: str = "auto"
    """Matmul dtype of training: auto, fp32 or bf16 (as `bows train --precision`)."""
    device: str = "cpu"
    """Where every run trains: cpu, auto (cuda if available) or a torch device (cuda, cuda:N); on a GPU
    use --workers 1."""
    workers: int = 2
    """Runs trained at once, each in its own process with one thread; 1: one after another here."""
    max_windows: int = 4000
    """Held-out windows (and training windows for the linear read-out) each run's stats use."""
    threshold: float = 0.5
    """Held-out R² above which a word counts as superposed (linearly, or only non-linearly)."""


SHARED = ("corpus", "vocab", "window", "lr", "steps", "batch_size", "precision", "max_windows", "threshold")


def parse_list(text: str, kind, flag: str) -> list:
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise InvalidArgument(f"{flag} must be a comma list of {kind.__name__} values, not {text!r}") from err
    if not values or len(set(values)) != len(values):
        raise InvalidArgument(f"{flag} must list at least one value, each once (got {text!r})")
    return values


def grid(cfg: SweepConfig) -> list[dict]:
    """Every (m, wd, seed) of the sweep, in the order they are reported."""
    ms = parse_list(cfg.latents, int, "--latents")
    wds = parse_list(cfg.weight_decays, float, "--weight-decays")
    seeds = parse_list(cfg.seeds, int, "--seeds")
    if min(ms) < 1 or min(wds) < 0 or cfg.steps < 1 or cfg.lr <= 0 or cfg.workers < 1:
        raise InvalidArgument("latents and steps must be >= 1, weight decays >= 0, lr > 0, workers >= 1")
    return [{"latent": m, "weight_decay": wd, "seed": s} for m in ms for wd in wds for s in seeds]


def run_name(job: dict) -> str:
    return f"m{job['latent']}_wd{job['weight_decay']:g}_s{job['seed']}"


def _train_config(cfg: SweepConfig, job: dict, data: BowsData, out: Path) -> TrainConfig:
    per_epoch = data.num_batches("train", cfg.batch_size)
    return TrainConfig(data=str(data.path), out=str(out / run_name(job)), latent=job["latent"],
                       weight_decay=job["weight_decay"], lr=cfg.lr, epochs=cfg.steps / per_epoch,
                       batch_size=cfg.batch_size, seed=job["seed"], device=cfg.device,
                       precision=cfg.precision, threads=1, progress=False)


def _finished(run: Path, settings: dict) -> dict | None:
    """The run's stats row if it is finished under ``settings``; else None (to train / resume)."""
    saved = read_config(run)
    if saved is None:
        return None
    refuse_changes(run, saved, settings)  # another sweep's run in this directory: refuse
    try:
        stats = json.loads((run / "stats.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = isinstance(stats, dict) and stats.get("format") == STATS_FORMAT and stats.get("settings") == settings
    return stats["row"] if ok and (run / "train.json").exists() else None


def _one(job: dict) -> dict:
    """Train one run and measure it (in a worker process: one thread for torch and BLAS)."""
    import torch
    from threadpoolctl import threadpool_limits

    from .runstats import run_stats

    torch.set_num_threads(1)
    cpu0 = time.process_time()  # CPU time, unlike wall time, does not grow when others share the cores
    with threadpool_limits(1):
        tcfg = TrainConfig(**job["train"])
        resumed = (Path(tcfg.out) / "checkpoint.safetensors").exists()
        summary = train(tcfg)
        model, _ = load_model(tcfg.out)
        t0 = time.time()
        stats = run_stats(model, BowsData(tcfg.data), max_windows=job["max_windows"],
                          threshold=job["threshold"])
    row = {"run": Path(tcfg.out).name, "latent": tcfg.latent, "weight_decay": tcfg.weight_decay,
           "seed": tcfg.seed, "steps": summary["steps"], "lr_x_wd_x_steps": summary["lr_x_wd_x_steps"],
           "val_mse": summary["val_loss"], "train_seconds": summary["seconds"],
           "stats_seconds": time.time() - t0, "cpu_seconds": time.process_time() - cpu0,
           "resumed": resumed, **stats}
    write_json(Path(tcfg.out) / "stats.json", {"format": STATS_FORMAT, "settings": job["settings"], "row": row})
    return row


def _check_shared(out: Path, cfg: SweepConfig) -> None:
    path = out / "sweep.json"
    wanted = {k: getattr(cfg, k) for k in SHARED}
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text()).get("shared", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        saved = {}
    diffs = [f"--{k.replace('_', '-')}: {wanted[k]!r} here, {saved.get(k)!r} in the saved sweep"
             for k in SHARED if saved.get(k) != wanted[k]]
    if diffs:
        raise ResumeError(f"{out} holds a sweep made with other settings ({'; '.join(diffs)}). Use the same "
                          f"settings to resume it, or another --out (or delete {out}) to start afresh.")


def run_sweep(cfg: SweepConfig) -> dict:
    """Train and measure every run of the grid (finished ones are reused) and write the table
    (``sweep.csv``, ``sweep.json``, ``sweep.md``) and plots into ``cfg.out``."""
    t0 = time.time()
    jobs = grid(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    _check_shared(out, cfg)
    data = ensure_data(DataConfig(out=str(out / "data"), corpus=cfg.corpus, vocab=cfg.vocab, window=cfg.window))
    import torch

    dev = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu" if cfg.device == "auto" else cfg.device
    dtype = resolve_dtype(cfg.precision, torch.device(dev))
    rows, todo = {}, []
    for job in jobs:
        tcfg = _train_config(cfg, job, data, out)
        settings = run_settings(tcfg, data, dtype, cfg.steps)
        row = _finished(Path(tcfg.out), settings)
        if row is not None:
            rows[run_name(job)] = row
        else:
            todo.append({"train": asdict(tcfg), "settings": settings, "max_windows": cfg.max_windows,
                         "threshold": cfg.threshold})
    write_json(out / "sweep.json", {"shared": {k: getattr(cfg, k) for k in SHARED}, "config": asdict(cfg),
                                    "rows": [rows[run_name(j)] for j in jobs if run_name(j) in rows]})
    log.info("[sweep] %d runs: %d finished, %d to train with %d worker(s)", len(jobs), len(rows), len(todo),
             cfg.workers)
    for row in _execute(todo, cfg.workers):
        rows[row["run"]] = row
        log.info("[sweep] %s done (%.0f s train, %.0f s stats); %d of %d, %.1f min so far", row["run"],
                 row["train_seconds"], row["stats_seconds"], len(rows), len(jobs), (time.time() - t0) / 60)
    table = [rows[run_name(j)] for j in jobs]
    result = {"shared": {k: getattr(cfg, k) for k in SHARED}, "config": asdict(cfg), "data": data.meta,
              "rows": table, "summary": summarize(table), "seconds": time.time() - t0,
              "trained_now": len(todo), "cpu_estimate": cpu_estimate(table, cfg.workers)}
    write_tables(result, out)
    log.info("[sweep] done in %.1f min -> %s", result["seconds"] / 60, out)
    return result


def _execute(todo: list[dict], workers: int):
    """Yield each finished run's row; sequential in this process when ``workers`` is 1."""
    if workers == 1 or len(todo) <= 1:
        for job in todo:
            yield _one(job)
        return
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch threads
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_one, job) for job in todo]
        try:
            for fut in cf.as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def cpu_estimate(rows: list[dict], workers: int) -> dict:
    """Wall time the sweep would take on ``workers`` idle cores, from the CPU time of the runs
    trained in one go (resumed runs count only their last part, runs of older versions none);
    a run without a measure is counted at the median of its m."""
    import numpy as np

    measured = [r for r in rows if r.get("cpu_seconds") is not None and not r.get("resumed")]
    per_m = {m: float(np.median([r["cpu_seconds"] for r in measured if r["latent"] == m]))
             for m in sorted({r["latent"] for r in measured})}
    if not per_m:
        return {"measured_runs": 0}
    fallback = float(np.median(list(per_m.values())))
    total = sum(r["cpu_seconds"] if r in measured else per_m.get(r["latent"], fallback) for r in rows)
    return {"measured_runs": len(measured), "runs": len(rows), "median_cpu_seconds_per_m": per_m,
            "cpu_seconds": total, "workers": workers, "idle_wall_minutes": total / workers / 60}


def summarize(rows: list[dict]) -> list[dict]:
    """Per (m, wd): mean, sd, 95% t-interval half-width and n over seeds of every numeric column."""
    import numpy as np
    from scipy.stats import t as student_t

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["latent"], r["weight_decay"]), []).append(r)
    out = []
    for (m, wd), rs in groups.items():
        s = {"latent": m, "weight_decay": wd, "seeds": len(rs), "lr_x_wd_x_steps": rs[0]["lr_x_wd_x_steps"]}
        for k in rs[0]:
            vals = [r.get(k) for r in rs]
            if k in ("latent", "weight_decay", "seed", "steps", "lr_x_wd_x_steps") or \
                    not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                continue
            v = np.asarray(vals, dtype=np.float64)
            sd = float(v.std(ddof=1)) if len(v) > 1 else None
            half = float(student_t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v))) if sd is not None else None
            s[k] = {"mean": float(v.mean()), "sd": sd, "ci95": half, "min": float(v.min()), "max": float(v.max())}
        out.append(s)
    return out


COLUMNS = [("m", "latent", 0), ("wd", "weight_decay", None), ("seed", "seed", 0), ("lr·wd·steps", "lr_x_wd_x_steps", 1),
           ("val MSE", "val_mse", 5), ("eff. rank", "effective_rank", 1), ("‖W‖²", "weight_norm_sq", 0),
           ("months interf.", "months_interference", 3), ("months cos interf.", "months_cos_interference", 2),
           ("roman interf.", "roman_interference", 3), ("months ring", "months_ring_order", 2),
           ("months lin R²", "months_linear_r2", 3), ("lin. words", "linearly_superposed", 0),
           ("non-lin. words", "nonlinearly_superposed", 0), ("model R² med.", "model_r2_median", 3),
           ("kNN purity", "knn_purity", 3), ("ρ(cos, φ)", "spearman_cos_phi", 3), ("alone≤0 words", "ci_words", 0),
           ("P(on \\| present)", "ci_on_present", 2)]


def _cell(v, nd: int | None) -> str:
    if v is None:
        return "n/a"
    if nd is None:
        return f"{v:g}"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown_rows(rows: list[dict]) -> list[str]:
    """The per-run table (one row per (m, wd, seed))."""
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), nd) for _, k, nd in COLUMNS) + " |")
    return lines


def markdown_summary(summary: list[dict]) -> list[str]:
    """Per (m, wd): mean ± 95% t-interval half-width over the seeds."""
    cols = [c for c in COLUMNS if c[1] not in ("latent", "weight_decay", "seed", "lr_x_wd_x_steps")]
    lines = ["| m | wd | lr·wd·steps | seeds | " + " | ".join(c[0] for c in cols) + " |",
             "|" + "---|" * (4 + len(cols))]
    for s in summary:
        cells = []
        for _, k, nd in cols:
            v = s.get(k)
            cells.append("n/a" if v is None else f"{v['mean']:.{nd}f}" +
                         (f" ± {v['ci95']:.{nd}f}" if v.get("ci95") is not None else ""))
        lines.append(f"| {s['latent']} | {s['weight_decay']:g} | {s['lr_x_wd_x_steps']:.1f} | {s['seeds']} | "
                     + " | ".join(cells) + " |")
    return lines


def write_tables(result: dict, out: Path) -> None:
    from .plots import plot_sweep

    rows = result["rows"]
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    with atomic_file(out / "sweep.csv", "w") as f:
        f.write(buf.getvalue())
    write_json(out / "sweep.json", result)
    result["figures"] = plot_sweep(rows, result["summary"], out)
    md = ["# BOWS sweep", "", sweep_caption(result), "", "## Mean ± 95% t-interval over seeds", ""]
    md += markdown_summary(result["summary"]) + ["", "## Every run", ""] + markdown_rows(rows) + [""]
    md += [f"![{f}]({f})" for f in result["figures"]]
    with atomic_file(out / "sweep.md", "w") as f:
        f.write("\n".join(md) + "\n")
    write_json(out / "sweep.json", result)


def sweep_caption(result: dict) -> str:
    c, d = result["config"], result["data"]
    e = result.get("cpu_estimate") or {}
    cost = (f"Cost: the runs' CPU time adds up to {e['cpu_seconds'] / 60:.1f} min ({e['measured_runs']} of {e['runs']} "
            f"runs measured in one go, the others counted at their m's median, or the median over m where none of "
            f"their m was measured: "
            + ", ".join(f"m {m} {v:.0f} s" for m, v in e["median_cpu_seconds_per_m"].items())
            + f"), so ≈ {e['idle_wall_minutes']:.0f} min of wall time on {e['workers']} idle cores "
            f"(one single-threaded run per core). " if e.get("measured_runs") else "")
    return (f"Data: {d['documents']} documents of `{c['corpus']}` ({d['documents_shorter_than_window']} shorter than "
            f"the window), V = {d['vocab_size']}, "
            f"{d['train']['windows']} training / {d['val']['windows']} held-out windows ({d['windowing']}; documents, "
            f"not windows, are split between training and held-out). " + cost +
            f"Every run: {c['steps']} AdamW steps, lr {c['lr']:g} (cosine), batch {c['batch_size']}; "
            f"decay budget lr·wd·steps per row (the reference's full run: {REFERENCE_DECAY_BUDGET:.1f}). "
            f"Stats on {min(c['max_windows'], d['val']['windows'])} held-out windows (the linear read-out is fitted on "
            f"{min(c['max_windows'], d['train']['windows'])} training windows); a word is superposed at held-out R² > {c['threshold']}: linearly when a ridge read-out of "
            f"h = Wx reaches it, non-linearly when only the model does. Interference = off-diagonal Frobenius "
            f"norm of the group's Gram matrix W_Gᵀ W_G (the paper's measure); 'cos' = the same on unit-norm columns. "
            f"Months ring = fraction of cyclic month neighbours adjacent in the PCA plane of the month columns "
            f"(chance {2 / 11:.2f}). alone≤0 words: of the 1,000 most frequent words, those whose one-hot "
            f"pre-activation |w|² + b is ≤ 0; P(on|present): how often their pre-activation is still > 0 in "
            f"held-out windows that contain them.")
