"""Steps/s of the BOWS trainer step vs a straightforward dense fp32 implementation, same run.

    python scripts/bench_bows.py [--vocab 10000 --latent 1000 --batch 512 --active 200 --steps 5]

Both sides run forward + backward + AdamW on the same windows; ``--active`` is the number of
active words per window (the packaged corpus at V 10k, window 20 has ~400; see meta.json).
"""
from __future__ import annotations

import argparse
import time

import torch

from superposition.data import Batch
from superposition.model import BowsModel, dense_loss, resolve_dtype


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--latent", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--active", type=int, default=400)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    # distinct ids per window, Zipf-like (frequent words are active more often)
    weights = 1.0 / torch.arange(1, a.vocab + 1, dtype=torch.float)
    ids = torch.multinomial(weights.expand(a.batch, -1), a.active, generator=g).sort(1).values
    rows = torch.arange(a.batch).repeat_interleave(a.active)
    batch = Batch(ids.reshape(-1), torch.arange(0, a.batch * a.active, a.active), rows, a.batch).to(dev)
    x = batch.dense(a.vocab)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timeit(step) -> float:
        step()
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        return a.steps / (time.perf_counter() - t)

    dense_model = BowsModel(a.vocab, a.latent).to(dev)
    W = torch.nn.Parameter(dense_model.E.detach().T.contiguous())
    b = torch.nn.Parameter(torch.zeros(a.vocab, device=dev))
    opt_d = torch.optim.AdamW([W, b], lr=5e-4, weight_decay=4.0)

    def dense_step():
        opt_d.zero_grad(set_to_none=True)
        dense_loss(W, b, x).backward()
        opt_d.step()

    results = {"dense fp32 (baseline)": timeit(dense_step)}
    for precision in ("fp32", "auto"):
        dtype = resolve_dtype(precision, dev)
        model = BowsModel(a.vocab, a.latent).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=4.0, fused=True)

        def step():
            opt.zero_grad(set_to_none=True)
            model.loss(batch, dtype).backward()
            opt.step()

        results[f"bows trainer ({dtype}, fused AdamW)"] = timeit(step)
    base = results["dense fp32 (baseline)"]
    print(f"V={a.vocab} m={a.latent} batch={a.batch} active/window={a.active} device={dev} threads={a.threads}")
    for name, sps in results.items():
        print(f"  {name:45s} {sps:7.2f} steps/s  x{sps / base:.2f}")


if __name__ == "__main__":
    main()
