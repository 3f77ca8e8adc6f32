"""Trainer: AdamW (decay on all parameters), per-step cosine schedule, atomic checkpoints,
resume (refused under other settings), seeds, a progress bar, and a time estimate logged before
the run starts.

A run directory holds ``config.json`` (written once, when the run starts), then
``checkpoint.safetensors`` (weights, optimiser moments, step and settings in one atomic file),
``log.jsonl``, and at the end ``model.safetensors`` and ``train.json`` (the mark of a finished run).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import expect_shapes, load_tensors, refuse_changes, save_tensors
from .data import BowsData
from .model import BowsModel, resolve_dtype
from bagofdims.errors import MissingFile, ResumeError, StorageError
from bagofdims.storage import atomic_file, remove_stale_temps, write_json

log = logging.getLogger(__name__)

RUN_FORMAT = "bows-run/1"
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    """Settings of ``bows train`` (every field is also a CLI flag)."""
    data: str = "runs/bows/data"
    """Data directory written by `bows data` (its --out)."""
    out: str = "runs/bows/m1000_wd4"
    """Run directory; an interrupted run there resumes when the settings are the same."""
    latent: int = 1000
    """Latent width m: W has shape m x vocabulary size."""
    weight_decay: float = 4.0
    """AdamW decoupled weight decay on all parameters (W and b); its strength is lr x wd x steps."""
    lr: float = 5e-4
    """Peak AdamW learning rate, cosine-decayed to 0 over the run (per step)."""
    epochs: float = 10.0
    """Passes over the training windows (fractions allowed): steps = round(epochs x batches per epoch)."""
    batch_size: int = 512
    """Windows per optimiser step."""
    relu: bool = True
    """Decode with ReLU, x_hat = ReLU(W^T W x + b); --no-relu trains the linear autoencoder."""
    seed: int = 0
    """Seed of the initial weights and of the batch order (epoch e shuffles with seed x 1000 + e)."""
    device: str = "auto"
    """Where to train: auto (cuda if available, else cpu) or a torch device (cpu, cuda, cuda:N)."""
    precision: str = "auto"
    """Matmul dtype: auto (CUDA: bf16, fp16 where unsupported; CPU: bf16 with AMX / AVX512-BF16,
    else fp32), fp32 or bf16; the loss, gradients and weights stay fp32."""
    checkpoint_every: int = 500
    """Steps between checkpoints (where an interrupted run resumes)."""
    threads: int = 0
    """CPU threads torch may use (0: torch's own choice)."""
    progress: bool = True
    """Show a progress bar with the running loss."""
    overwrite: bool = False
    """Discard a run already in ``out`` (finished or interrupted) instead of resuming it."""


def save_model(model: BowsModel, path: Path, settings: dict | None = None) -> None:
    """``model.safetensors`` holds ``W`` [m, V] and ``b`` [V] (and the run's settings)."""
    save_tensors(path, {"W": model.W, "b": model.b}, {"format": "bows-model/1", "settings": settings})


def read_config(run_dir: str | Path) -> dict | None:
    """The run's ``config.json``, or None when there is none; unreadable -> StorageError."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StorageError(f"{path}: not readable JSON ({err}); retrain with --overwrite") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("latent"), int):
        raise StorageError(f"{path}: not the config of a bows run; retrain with --overwrite")
    return cfg


def load_model(run_dir: str | Path, device: str = "cpu") -> tuple[BowsModel, dict]:
    """Model and its ``config.json`` from a run directory (checked against each other)."""
    run_dir = Path(run_dir)
    path = run_dir / "model.safetensors"
    cfg = read_config(run_dir)
    if not path.exists() or cfg is None:
        raise MissingFile(f"{run_dir}: no trained model; train it with `bows train --out {run_dir}`")
    fix = f"retrain it with `bows train --out {run_dir} --overwrite`"
    t, _ = load_tensors(path, fix)
    V = cfg.get("vocab_size", t["W"].shape[-1] if t.get("W") is not None else 0)
    expect_shapes(path, t, {"W": (cfg["latent"], V), "b": (V,)}, fix)
    model = BowsModel(V, cfg["latent"], relu=cfg.get("relu", True)).to(device)
    with torch.no_grad():
        model.E.copy_(t["W"].T)
        model.b.copy_(t["b"])
    return model, cfg


def decay_strength(cfg: TrainConfig, steps: int) -> float:
    """lr x wd x steps: what decoupled decay actually does (the cosine mean factor is 1/2)."""
    return cfg.lr * cfg.weight_decay * steps


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def run_settings(cfg: TrainConfig, data: BowsData, dtype: torch.dtype, total: int) -> dict:
    """What ``config.json`` and every checkpoint record about a run (compared on resume)."""
    saved = {k: v for k, v in asdict(cfg).items() if k != "overwrite"}
    return {**saved, "format": RUN_FORMAT, "vocab_size": data.vocab_size, "total_steps": total,
            "compute_dtype": str(dtype), "data_fingerprint": data.fingerprint}


def _checkpoint(out: Path, model, opt, step: int, settings: dict, progress: dict) -> None:
    """Weights, AdamW moments, step and settings in one file, replaced atomically."""
    state = opt.state_dict()["state"]
    tensors = {"E": model.E, "b": model.b}
    for pid, name in ((0, "E"), (1, "b")):
        tensors[f"{name}.exp_avg"] = state[pid]["exp_avg"]
        tensors[f"{name}.exp_avg_sq"] = state[pid]["exp_avg_sq"]
    save_tensors(out / CHECKPOINT, tensors, {
        "format": "bows-checkpoint/1", "step": step, "opt_step": float(state[0]["step"]),
        "settings": settings, **progress})


def _resume(out: Path, model, opt, settings: dict) -> dict:
    """Load the checkpoint into ``model`` and ``opt``; its record (step, ema, seconds)."""
    path = out / CHECKPOINT
    fix = f"delete {path} to restart from step 0, or use --overwrite"
    t, rec = load_tensors(path, fix)
    if rec is None or rec.get("format") != "bows-checkpoint/1" or not isinstance(rec.get("step"), int):
        raise StorageError(f"{path}: not a bows checkpoint; {fix}")
    refuse_changes(out, rec.get("settings") or {}, settings)
    V, m = model.E.shape
    shapes = {n: s for p, s in (("E", (V, m)), ("b", (V,))) for n in (p, f"{p}.exp_avg", f"{p}.exp_avg_sq")}
    expect_shapes(path, t, shapes, fix)
    dev = model.E.device
    with torch.no_grad():
        model.E.copy_(t["E"])
        model.b.copy_(t["b"])
    opt.load_state_dict({"state": {pid: {"step": torch.tensor(rec["opt_step"]),
                                         "exp_avg": t[f"{n}.exp_avg"].to(dev),
                                         "exp_avg_sq": t[f"{n}.exp_avg_sq"].to(dev)}
                                   for pid, n in ((0, "E"), (1, "b"))},
                         "param_groups": opt.state_dict()["param_groups"]})
    return rec


def _trim_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (later ones repeat after a resume; a cut line goes)."""
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    with atomic_file(path, "w") as f:
        f.writelines(kept)


def _prepare(out: Path, cfg: TrainConfig, settings: dict) -> dict | None:
    """Check ``out`` against this run: None to train, or the summary of a finished run.

    A finished or interrupted run is continued only under the same settings; ``overwrite``
    removes it first (the completion mark first, so a kill midway never looks finished).
    """
    if cfg.overwrite:
        for name in ("train.json", "config.json", CHECKPOINT, "checkpoint.json", "model.safetensors",
                     "log.jsonl"):
            (out / name).unlink(missing_ok=True)
    if (out / "checkpoint.json").exists():
        raise ResumeError(f"{out} holds a checkpoint of an older bows version that cannot be "
                          "resumed; use another --out or --overwrite to start afresh.")
    saved = read_config(out)
    if saved is not None:
        if saved.get("format") != RUN_FORMAT:
            raise ResumeError(f"{out} holds a run of an older bows version that cannot be resumed or "
                              "reused; use another --out or --overwrite to start afresh.")
        refuse_changes(out, saved, settings)
        if (out / "train.json").exists() and (out / "model.safetensors").exists():
            (out / CHECKPOINT).unlink(missing_ok=True)  # a kill after the end can leave it
            log.info("%s: already trained with these settings; nothing to do", out)
            return json.loads((out / "train.json").read_text())
    else:
        write_json(out / "config.json", settings)
    return None


@torch.no_grad()
def evaluate(model: BowsModel, data: BowsData, split: str = "val", batch_size: int = 2048,
             compute_dtype=torch.float32) -> float:
    """Mean squared error on a split."""
    total, n = 0.0, 0
    dev = model.E.device
    for batch in data.batches(split, batch_size, shuffle=False):
        batch = batch.to(dev)
        with torch.enable_grad():
            loss = model.loss(batch, compute_dtype)
        total += float(loss.detach()) * batch.n
        n += batch.n
    return total / max(n, 1)


def _timed_steps(model, opt, data, cfg, dtype, n: int = 3) -> float:
    """Seconds per step, measured on a copy of the state (weights are restored afterwards)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    it = data.batches("train", cfg.batch_size, seed=cfg.seed)
    times = []
    for _ in range(n + 1):
        batch = next(it).to(model.E.device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(batch, dtype).backward()
        if model.E.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    model.load_state_dict(saved)
    opt.state.clear()
    return sorted(times[1:])[len(times[1:]) // 2]


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a model into ``cfg.out``; returns the summary also written to train.json.

    ``cfg.threads`` applies for the run only: the caller's torch thread count is restored.
    """
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(before)


def _train(cfg: TrainConfig) -> dict:
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    dtype = resolve_dtype(cfg.precision, device)
    data = BowsData(cfg.data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # a killed run's half-written files; the real ones are whole
    per_epoch = data.num_batches("train", cfg.batch_size)
    total = max(1, int(round(cfg.epochs * per_epoch)))
    settings = run_settings(cfg, data, dtype, total)
    finished = _prepare(out, cfg, settings)
    if finished is not None:
        return finished
    torch.manual_seed(cfg.seed)
    model = BowsModel(data.vocab_size, cfg.latent, relu=cfg.relu, seed=cfg.seed).to(device)
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    sec = _timed_steps(model, opt, data, cfg, dtype)
    log.info("[bows] V=%d m=%d steps=%d on %s (%s): ~%.0f ms/step, expected ~%.1f min; "
             "lr*wd*steps = %.3g", data.vocab_size, cfg.latent, total, device, dtype, sec * 1e3,
             sec * total / 60, decay_strength(cfg, total))
    rec = {"step": 0, "ema": None, "seconds": 0.0}
    if (out / CHECKPOINT).exists():
        rec = _resume(out, model, opt, settings)
        log.info("[bows] %s: resuming at step %d of %d", out, rec["step"], total)
    _trim_log(out / "log.jsonl", rec["step"])
    step, ema = rec["step"], rec.get("ema")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total), last_epoch=-1)
    for _ in range(step):  # replay the schedule position without warnings about step order
        sched.last_epoch += 1
    for g in opt.param_groups:
        g["lr"] = cfg.lr * _cosine(step, total)
    t0 = time.time() - rec.get("seconds", 0.0)  # time of earlier attempts counts
    bar = tqdm(total=total, initial=step, disable=not cfg.progress, desc="train", unit="step")
    with open(out / "log.jsonl", "a") as logf:
        while step < total:
            epoch, skip = divmod(step, per_epoch)
            for batch in data.batches("train", cfg.batch_size, seed=cfg.seed * 1000 + epoch, skip=skip):
                batch = batch.to(device)
                opt.zero_grad(set_to_none=True)
                loss = model.loss(batch, dtype)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                lv = float(loss.detach())
                ema = lv if ema is None else 0.98 * ema + 0.02 * lv
                bar.update(1)
                if step % 50 == 0 or step == total:
                    bar.set_postfix(loss=f"{ema:.3e}")
                    logf.write(json.dumps({"step": step, "loss": lv, "lr": opt.param_groups[0]["lr"]}) + "\n")
                if step % cfg.checkpoint_every == 0 and step < total:
                    logf.flush()
                    _checkpoint(out, model, opt, step, settings, {"ema": ema, "seconds": time.time() - t0})
                if step >= total:
                    break
    bar.close()
    save_model(model, out / "model.safetensors", settings)
    summary = {"steps": total, "seconds": time.time() - t0, "ms_per_step_estimate": sec * 1e3,
               "final_train_loss_ema": ema, "val_loss": evaluate(model, data, "val"),
               "lr_x_wd_x_steps": decay_strength(cfg, total), "compute_dtype": str(dtype),
               "weight_norm_sq": float(model.E.detach().square().sum())}
    write_json(out / "train.json", summary)  # written last: it marks the run finished
    (out / CHECKPOINT).unlink(missing_ok=True)
    return summary
