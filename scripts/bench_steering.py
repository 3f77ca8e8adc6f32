"""generate() throughput with and without an active sign flip, measured in the same process.

    python scripts/bench_steering.py [--model smollm2] [--new-tokens 64] [--reps 3]

Greedy decoding of ``--new-tokens`` tokens (forced: min = max) at batch 1 and batch 8, KV cache
on; a ~30-dim feature at one middle layer is flipped ("away", all positions, so every decode step
is touched). Runs alternate (plain, flipped, plain, ...) so drift hits both; the best of the
repetitions and the median of the paired ratios are reported. One thread.
"""

from __future__ import annotations

import argparse
import time

import torch

import bagofdims as bd
from bagofdims.features.feature import Feature
from bagofdims.steering.interventions import sign_flip

PROMPT = "Here is a list of animals: dog, cat, horse, and"


def _run(model, enc, n_new: int, pad: int) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                             pad_token_id=pad)
    dt = time.perf_counter() - t0
    assert out.shape[1] == enc["input_ids"].shape[1] + n_new
    return out.shape[0] * n_new / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dims", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = bd.load_model(args.model)
    n_layers = len(bd.sites.find_blocks(model)[1])
    layer = n_layers * 2 // 3
    width = model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    feat = Feature("bench", f"resid.{layer}", torch.randperm(width, generator=g)[:args.dims],
                   torch.where(torch.rand(args.dims, generator=g) < 0.5, -1, 1))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tok.padding_side = "left"
    print(f"{args.model}: flip of {args.dims} dims at resid.{layer}, {args.new_tokens} new tokens, "
          f"{args.reps} interleaved reps, {torch.get_num_threads()} thread(s)")
    for batch in (1, 8):
        enc = tok([PROMPT] * batch, return_tensors="pt", padding=True)
        _run(model, enc, 4, pad)  # warm-up
        plain, flipped = [], []
        for _ in range(args.reps):
            plain.append(_run(model, enc, args.new_tokens, pad))
            with sign_flip(model, feat, mode="away") as flip:
                flipped.append(_run(model, enc, args.new_tokens, pad))
            assert flip.calls[feat.site] == args.new_tokens  # every decode step went through it
        p, f = max(plain), max(flipped)
        paired = sorted(a / b for a, b in zip(plain, flipped))  # neighbours in time share drift
        med = paired[len(paired) // 2]
        print(f"batch {batch}: plain {p:8.1f} tok/s   flipped {f:8.1f} tok/s   overhead best-of "
              f"{100 * (p / f - 1):+.1f}%, median of pairs {100 * (med - 1):+.1f}%   (all reps: plain "
              f"{[round(x, 1) for x in plain]}, flipped {[round(x, 1) for x in flipped]})")


if __name__ == "__main__":
    main()
