"""Steps/s of the BOWS trainer vs the reference training loop's form, same data, same run.

    python scripts/bench_bows.py --data runs/bows/data --latents 200,1000,10000 [--reps 5]

The reference form (superposition.reference.ReferenceLoop): dense multi-hot x per batch, tied
ReLU(x W^T W + b) with autograd in fp32, F.mse_loss, default torch AdamW on all parameters,
CosineAnnealingLR, batch 512. Ours (TrainerLoop): the trainer's fused sparse loss in its compute
dtype (--precision, default auto), fused AdamW, the same schedule. At each m both start from the
same weights and take the same batches of real windows in the same order, one step each per
round, the order alternating between rounds (the machine may be shared); the first round is a
warm-up; medians are reported. Because both follow the same trajectory, the loss of every timed
step is compared too; --check-steps runs a longer side-by-side check at the smallest m with ours
in fp32 and in the compute dtype. Without --data, windows of --active Zipf-distributed words.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from superposition.data import Batch, BowsData, rows_to_batch
from superposition.model import BowsModel, resolve_dtype
from superposition.reference import ReferenceLoop, TrainerLoop


def zipf_batches(vocab: int, batch: int, active: int, count: int, seed: int = 0) -> list[Batch]:
    """Windows of distinct Zipf-distributed word ids (frequent words are active more often)."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float)
    out = []
    for _ in range(count):
        ids = torch.multinomial(weights.expand(batch, -1), active, generator=g).sort(1).values
        rows = torch.arange(batch).repeat_interleave(active)
        out.append(Batch(ids.reshape(-1), torch.arange(0, batch * active, active), rows, batch))
    return out


def data_batches(path: str, batch: int, count: int, seed: int = 0) -> tuple[list[Batch], int]:
    data = BowsData(path)
    x = data.split("train")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    need = count * batch
    order = np.resize(order, need)  # wraps around when the split is smaller than count batches
    return [rows_to_batch(x, order[k * batch:(k + 1) * batch]) for k in range(count)], data.vocab_size


def side_by_side(init: BowsModel, batches, dtype, lr, wd, total, reps, dev) -> dict:
    ref = ReferenceLoop(init, lr, wd, total)
    ours = TrainerLoop(init, lr, wd, total, dtype)
    sides = {"reference": ref, "ours": ours}
    times = {k: [] for k in sides}
    losses = {k: [] for k in sides}
    for i in range(reps + 1):
        order = ("reference", "ours") if i % 2 == 0 else ("ours", "reference")
        for name in order:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss = sides[name].step(batches[i % len(batches)])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:  # round 0 is a warm-up
                times[name].append(time.perf_counter() - t)
            losses[name].append(loss)
    r, o = np.array(losses["reference"]), np.array(losses["ours"])
    return {"ref_s": statistics.median(times["reference"]), "ours_s": statistics.median(times["ours"]),
            "max_rel_loss_diff": float(np.max(np.abs(r - o) / np.abs(r))), "last_loss": (r[-1], o[-1])}


def check(init: BowsModel, batches, dtype, lr, wd, steps) -> None:
    loops = {"reference fp32": ReferenceLoop(init, lr, wd, steps),
             "ours fp32": TrainerLoop(init, lr, wd, steps, torch.float32)}
    if dtype != torch.float32:
        loops[f"ours {str(dtype).removeprefix('torch.')}"] = TrainerLoop(init, lr, wd, steps, dtype)
    curves = {k: np.array([loop.step(batches[s % len(batches)]) for s in range(steps)]) for k, loop in loops.items()}
    ref = curves["reference fp32"]
    print(f"agreement check: m={init.E.shape[1]}, {steps} steps, lr {lr}, wd {wd}, same init and batches")
    for k, c in curves.items():
        print(f"  {k:16s} loss at step 1 {c[0]:.6f}  at step {steps} {c[-1]:.6f}  "
              f"max |rel diff| vs reference over the run {np.max(np.abs(c - ref) / ref):.2e}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="", help="bows data directory (its train windows); empty: Zipf windows")
    p.add_argument("--vocab", type=int, default=10000, help="without --data: vocabulary size")
    p.add_argument("--active", type=int, default=60, help="without --data: words per window")
    p.add_argument("--latents", default="200,1000,10000")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--reps", type=int, default=5, help="timed rounds per m (plus one warm-up round)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=4.0)
    p.add_argument("--check-steps", type=int, default=200, help="0: skip the longer agreement check")
    p.add_argument("--check-lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    dtype = resolve_dtype(a.precision, dev)
    count = max(a.reps + 1, 8)
    if a.data:
        batches, V = data_batches(a.data, a.batch, max(count, a.check_steps))
    else:
        V = a.vocab
        batches = zipf_batches(V, a.batch, a.active, count)
    batches = [b.to(dev) for b in batches]
    active = float(np.mean([len(b.ids) / b.n for b in batches]))
    print(f"V={V} batch={a.batch} active words/window {active:.1f} ({a.data or 'Zipf windows'}) device={dev} "
          f"threads={torch.get_num_threads()} ours: {dtype}; reference: fp32 dense autograd; lr {a.lr} wd {a.weight_decay}; "
          f"medians of {a.reps} interleaved rounds after one warm-up (shared machine: timings are noisy)")
    for m in (int(x) for x in a.latents.split(",")):
        init = BowsModel(V, m, seed=0).to(dev)
        try:
            r = side_by_side(init, batches, dtype, a.lr, a.weight_decay, 10 * a.reps, a.reps, dev)
        except (RuntimeError, MemoryError) as err:  # out of memory at large m: say so, go on
            print(f"  m={m}: did not fit ({str(err).splitlines()[0][:120]})")
            continue
        print(f"  m={m:6d}  reference {1 / r['ref_s']:7.3f} steps/s   ours {1 / r['ours_s']:7.3f} steps/s   "
              f"ours / reference x{r['ref_s'] / r['ours_s']:.2f}   loss of the timed steps: max |rel diff| "
              f"{r['max_rel_loss_diff']:.1e} (last {r['last_loss'][0]:.5f} vs {r['last_loss'][1]:.5f})")
        del init
    if a.check_steps:
        m = min(int(x) for x in a.latents.split(","))
        check(BowsModel(V, m, seed=0).to(dev), batches, dtype, a.check_lr, a.weight_decay, a.check_steps)


if __name__ == "__main__":
    main()
