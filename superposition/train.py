"""Trainer: AdamW (decay on all parameters), per-step cosine schedule, safetensors checkpoints,
resume, seeds, a progress bar, and a time estimate printed before the run starts."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .data import BowsData
from .model import BowsModel, resolve_dtype
from bagofdims.errors import MissingFile


@dataclass
class TrainConfig:
    """Settings of ``bows train`` (every field is also a CLI flag)."""
    data: str = "runs/bows/data"
    out: str = "runs/bows/m1000_wd4"
    latent: int = 1000
    weight_decay: float = 4.0
    lr: float = 5e-4
    epochs: float = 10.0
    batch_size: int = 512
    relu: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 500
    threads: int = 0
    progress: bool = True


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _atomic_safetensors(path: Path, tensors: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_model(model: BowsModel, path: Path) -> None:
    """``model.safetensors`` holds ``W`` [m, V] and ``b`` [V]."""
    _atomic_safetensors(path, {"W": model.W, "b": model.b})


def load_model(run_dir: str | Path, device: str = "cpu") -> tuple[BowsModel, dict]:
    """Model and its ``config.json`` from a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").exists():
        raise MissingFile(f"{run_dir}: no model.safetensors; train it with `bows train --out {run_dir}`")
    cfg = json.loads((run_dir / "config.json").read_text())
    t = load_file(str(run_dir / "model.safetensors"), device=device)
    m, V = t["W"].shape
    model = BowsModel(V, m, relu=cfg.get("relu", True))
    with torch.no_grad():
        model.E.copy_(t["W"].T)
        model.b.copy_(t["b"])
    return model, cfg


def decay_strength(cfg: TrainConfig, steps: int) -> float:
    """lr x wd x steps: what decoupled decay actually does (the cosine mean factor is 1/2)."""
    return cfg.lr * cfg.weight_decay * steps


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _checkpoint(out: Path, model, opt, step: int) -> None:
    state = opt.state_dict()["state"]
    tensors = {"E": model.E, "b": model.b}
    for pid, name in ((0, "E"), (1, "b")):
        if pid in state:
            tensors[f"{name}.exp_avg"] = state[pid]["exp_avg"]
            tensors[f"{name}.exp_avg_sq"] = state[pid]["exp_avg_sq"]
    _atomic_safetensors(out / "checkpoint.safetensors", tensors)
    _atomic_json(out / "checkpoint.json", {"step": step, "opt_step": float(state[0]["step"]) if 0 in state else 0})


def _resume(out: Path, model, opt) -> int:
    if not (out / "checkpoint.json").exists():
        return 0
    info = json.loads((out / "checkpoint.json").read_text())
    t = load_file(str(out / "checkpoint.safetensors"), device=str(model.E.device))
    with torch.no_grad():
        model.E.copy_(t["E"])
        model.b.copy_(t["b"])
    if "E.exp_avg" in t:
        opt.load_state_dict({"state": {pid: {"step": torch.tensor(info["opt_step"]),
                                             "exp_avg": t[f"{n}.exp_avg"], "exp_avg_sq": t[f"{n}.exp_avg_sq"]}
                                       for pid, n in ((0, "E"), (1, "b"))},
                             "param_groups": opt.state_dict()["param_groups"]})
    return int(info["step"])


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
    """Train (or resume) a model into ``cfg.out``; returns the summary also written to train.json."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    dtype = resolve_dtype(cfg.precision, device)
    data = BowsData(cfg.data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = BowsModel(data.vocab_size, cfg.latent, relu=cfg.relu, seed=cfg.seed).to(device)
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    per_epoch = data.num_batches("train", cfg.batch_size)
    total = max(1, int(round(cfg.epochs * per_epoch)))
    _atomic_json(out / "config.json", {**asdict(cfg), "vocab_size": data.vocab_size,
                                       "total_steps": total, "compute_dtype": str(dtype)})
    sec = _timed_steps(model, opt, data, cfg, dtype)
    print(f"[bows] V={data.vocab_size} m={cfg.latent} steps={total} on {device} ({dtype}): "
          f"~{sec * 1e3:.0f} ms/step, expected ~{sec * total / 60:.1f} min; "
          f"lr*wd*steps = {decay_strength(cfg, total):.3g}", flush=True)
    step = _resume(out, model, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total), last_epoch=-1)
    for _ in range(step):  # replay the schedule position without warnings about step order
        sched.last_epoch += 1
    for g in opt.param_groups:
        g["lr"] = cfg.lr * _cosine(step, total)
    t0 = time.time()
    bar = tqdm(total=total, initial=step, disable=not cfg.progress, desc="train", unit="step")
    logf = open(out / "log.jsonl", "a")
    ema = None
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
                _checkpoint(out, model, opt, step)
            if step >= total:
                break
    bar.close()
    logf.close()
    save_model(model, out / "model.safetensors")
    summary = {"steps": total, "seconds": time.time() - t0, "ms_per_step_estimate": sec * 1e3,
               "final_train_loss_ema": ema, "val_loss": evaluate(model, data, "val"),
               "lr_x_wd_x_steps": decay_strength(cfg, total), "compute_dtype": str(dtype),
               "weight_norm_sq": float(model.E.detach().square().sum())}
    _atomic_json(out / "train.json", summary)
    for f in ("checkpoint.safetensors", "checkpoint.json"):
        (out / f).unlink(missing_ok=True)
    return summary
