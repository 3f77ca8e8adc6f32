"""Steps/s of the BOWS trainer step vs a straightforward dense fp32 implementation, same run.

    python scripts/bench_bows.py [--vocab 10000 --latent 1000 --batch 512 --active 400 --reps 5]

Both sides run forward + backward + AdamW on the same windows and start from the same weights.
Two states are measured: at initialisation, and in steady-state training after ``--warmup``
trainer steps (lr ``--warmup-lr``) on the same kind of windows, when the biases of most
outputs have gone negative; the steady state is the one the speed target refers to. Baseline and
trainer steps are interleaved in one process (the machine may be shared) and medians reported,
at ``--threads`` (comma list). ``--active`` is the number of active words per window (the
packaged corpus at V 10k, window 20 has ~400; see meta.json).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from superposition.data import Batch
from superposition.model import BowsModel, dense_loss, resolve_dtype


def make_batches(vocab: int, batch: int, active: int, count: int, seed: int = 0) -> list[Batch]:
    """Windows of distinct Zipf-distributed word ids (frequent words are active more often)."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float)
    out = []
    for _ in range(count):
        ids = torch.multinomial(weights.expand(batch, -1), active, generator=g).sort(1).values
        rows = torch.arange(batch).repeat_interleave(active)
        out.append(Batch(ids.reshape(-1), torch.arange(0, batch * active, active), rows, batch))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--latent", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--active", type=int, default=400)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--warmup-lr", type=float, default=1e-2)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    dtype = resolve_dtype(a.precision, dev)
    batches = [b.to(dev) for b in make_batches(a.vocab, a.batch, a.active, 8)]
    dense_x = [b.dense(a.vocab) for b in batches]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model = BowsModel(a.vocab, a.latent).to(dev)
    print(f"V={a.vocab} m={a.latent} batch={a.batch} active/window={a.active} device={dev} "
          f"trainer compute dtype={dtype}; medians of {a.reps} interleaved steps")
    for state in ("init", "steady"):
        if state == "steady":  # train the model into its steady state, then start both from it
            torch.set_num_threads(max(int(t) for t in a.threads.split(",")))
            opt = torch.optim.AdamW(model.parameters(), lr=a.warmup_lr, weight_decay=1.0, fused=True)
            for s in range(a.warmup):
                opt.zero_grad(set_to_none=True)
                model.loss(batches[s % len(batches)], dtype).backward()
                opt.step()
        with torch.no_grad():
            h = model.encode(batches[0])
            on = (torch.addmm(model.b, h, model.E.T) > 0)
        frac_cols = float(on.any(0).float().mean())
        for threads in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(threads)
            fast = BowsModel(a.vocab, a.latent).to(dev)
            fast.load_state_dict(model.state_dict())
            opt_f = torch.optim.AdamW(fast.parameters(), lr=5e-4, weight_decay=4.0, fused=dev.type != "mps")
            W = torch.nn.Parameter(model.E.detach().T.contiguous())
            b = torch.nn.Parameter(model.b.detach().clone())
            opt_d = torch.optim.AdamW([W, b], lr=5e-4, weight_decay=4.0)

            def dense_step(i):
                opt_d.zero_grad(set_to_none=True)
                dense_loss(W, b, dense_x[i % len(batches)]).backward()
                opt_d.step()

            def fast_step(i):
                opt_f.zero_grad(set_to_none=True)
                fast.loss(batches[i % len(batches)], dtype).backward()
                opt_f.step()

            times = {"dense": [], "fast": []}
            for i in range(a.reps + 1):
                for name, step in (("dense", dense_step), ("fast", fast_step)):
                    sync()
                    t = time.perf_counter()
                    step(i)
                    sync()
                    if i:  # the first repetition is a warm-up
                        times[name].append(time.perf_counter() - t)
            d, f = statistics.median(times["dense"]), statistics.median(times["fast"])
            print(f"  state={state:6s} threads={threads}  on-columns/batch {frac_cols:.2f}  "
                  f"dense fp32 {1 / d:6.2f} steps/s   trainer {1 / f:6.2f} steps/s   speed-up x{d / f:.2f}")


if __name__ == "__main__":
    main()
