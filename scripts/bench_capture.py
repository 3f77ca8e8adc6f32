"""Sign-cache build throughput vs a bare HF forward over the same batches (same process).

    python scripts/bench_capture.py                 # SmolLM2, 16 batches of 512 tokens, 3 rounds
    python scripts/bench_capture.py --full          # also time the full-vocabulary build
    python scripts/bench_capture.py --bos off       # [token] rows (default: the cache's default
                                                    # input, [document start, token] for LMs)

Baselines, each over exactly the rows the cache build runs:
  lm    model(input_ids) of the causal LM: no hooks, output_hidden_states=False, use_cache=False
  base  the base model only (no LM head), same settings
The build captures every `resid` site + `final`, packs the signs and keeps them in memory; with
`final` captured it stops before the LM head, which is why it can beat the `lm` baseline. With a
start token the baselines run the two-token rows [BOS, token] and the build reuses the BOS
key/values (bagofdims.inputs), so each of its forwards runs one position.
Rounds alternate baseline and build so that a busy neighbour hurts both alike; medians are shown.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bagofdims as bd
from bagofdims.capture import no_cache_kwargs
from bagofdims.inputs import resolve_prefix


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--full", action="store_true", help="also time the full-vocabulary build")
    p.add_argument("--bos", choices=("auto", "on", "off"), default="auto",
                   help="document-start token before every token (auto: the cache's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = bd.load_model(args.model, device="cpu" if not torch.cuda.is_available() else None)
    device = next(model.parameters()).device
    n = args.batches * args.batch_size
    ids = torch.arange(n)
    batches = ids.to(device).reshape(args.batches, args.batch_size, 1)
    bos = {"auto": None, "on": True, "off": False}[args.bos]
    bos_id = resolve_prefix(model, tok, bos)[0]
    if bos_id is not None:
        batches = torch.cat([torch.full_like(batches, bos_id), batches], dim=2)
    extra = no_cache_kwargs(model)
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model

    def bare(m):
        def run():
            with torch.inference_mode():
                for b in batches:
                    m(input_ids=b, attention_mask=torch.ones_like(b), **extra)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    def build():
        bd.SignCache.build(model, tok, sites=["resid.*", "final"], tokens=ids, bos=bos,
                           batch_size=args.batch_size, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()

    bare(model)()  # warm-up
    times = {"lm": [], "base": [], "cache": []}
    for _ in range(args.rounds):
        times["lm"].append(_time(bare(model)))
        times["cache"].append(_time(build))
        times["base"].append(_time(bare(base)))
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n / v for k, v in med.items()}
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads), {n:,} tokens/round, "
          f"{args.rounds} rounds, {'[BOS, token]' if bos_id is not None else '[token]'} rows, median:")
    print(f"  bare LM forward    {tps['lm']:10,.0f} tok/s")
    print(f"  bare base forward  {tps['base']:10,.0f} tok/s")
    print(f"  sign-cache build   {tps['cache']:10,.0f} tok/s   (31 sites, packed)")
    print(f"  ratio build / LM forward   = {tps['cache'] / tps['lm']:.3f}")
    print(f"  ratio build / base forward = {tps['cache'] / tps['base']:.3f}")
    if args.full:
        t = time.perf_counter()
        cache = bd.SignCache.build(model, tok, sites=["resid.*", "final"], bos=bos,
                                   batch_size=args.batch_size, progress=False)
        full = time.perf_counter() - t
        print(f"  full vocabulary ({len(cache):,} tokens) built in {full:.1f} s "
              f"({len(cache) / full:,.0f} tok/s)")


if __name__ == "__main__":
    main()
