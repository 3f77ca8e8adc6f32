"""Sign-cache build speed against the ideal bare forward over the same tokens (same process).

    python scripts/bench_capture.py                   # SmolLM2, 4,096 tokens, 1 thread, 5 rounds
    python scripts/bench_capture.py --no-bf16 --rounds 3
    python scripts/bench_capture.py --profile 25      # also: where one build's time goes

Each round times, one after the other (so a busy neighbour hurts all alike; medians shown):
  bare    the ideal bare forward: the headless model (``get_decoder()``) on each token after the
          same start token, whose key/values are computed once per round and repeated over each
          batch; no hooks, nothing captured or packed
  build   ``SignCache.build`` over the same tokens, every ``resid`` site + ``final``, signs packed
  hidden  the same forward with HF ``output_hidden_states=True``, each hidden state's last
          position packed the same way (the states the build captures, taken the HF way)
  nnsight the same sites traced with nnsight, only where nnsight is importable
  bf16    the build under ``dtype="bfloat16"`` autocast (its speed-up over the float32 build, and
          the share of sign bits identical to the float32 build, per site)
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import inspect
import pstats
import statistics
import time

import numpy as np
import torch

import bagofdims as bd
from bagofdims.inputs import resolve_prefix
from bagofdims.signs import bits

SITES = ["resid.*", "final"]


def _timed(fn, device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``. On a shared CPU the CPU time leaves out
    the time this process waited for a core, so it is the steadier of the two there."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def _forward(decoder, bos_id, device):
    """``begin()`` computes the start token's key/values; ``inputs(batch)``: the headless model's
    keyword arguments for ``[start, token]`` rows, those key/values repeated over the batch."""
    key = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    start = {}

    def begin():
        start.clear()
        if bos_id is not None:
            out = decoder(input_ids=torch.tensor([[bos_id]], device=device), use_cache=True)
            start["kv"] = out.past_key_values

    def inputs(batch) -> dict:
        ids = batch.reshape(-1, 1)
        if bos_id is None:
            return dict(input_ids=ids, use_cache=False)
        kv = copy.deepcopy(start["kv"])
        kv.batch_repeat_interleave(len(ids))
        mask = torch.ones(len(ids), 2, dtype=torch.long, device=device)
        return {"input_ids": ids, "attention_mask": mask, "use_cache": True, key: kv}

    return begin, inputs


def _agreement(a: bd.SignCache, b: bd.SignCache) -> dict[str, float]:
    """Share of identical sign bits per site."""
    out = {}
    for site in a.sites:
        d = a.width(site)
        diff = np.unpackbits(np.asarray(a.packed(site)) ^ np.asarray(b.packed(site)), axis=-1,
                             count=d, bitorder="little")
        out[site] = 1.0 - diff.sum() / diff.size
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--bos", choices=("auto", "on", "off"), default="auto",
                   help="start token before every token (auto: the cache's default)")
    p.add_argument("--no-hidden", action="store_true",
                   help="skip the output_hidden_states baseline")
    p.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 build")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the rounds, profile one build and print its N costliest functions")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = bd.load_model(args.model, device="cpu" if not torch.cuda.is_available() else None)
    device = next(model.parameters()).device
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    ids = torch.arange(args.tokens)
    batches = ids.to(device).split(args.batch_size)
    bos_id = resolve_prefix(model, tok, {"auto": None, "on": True, "off": False}[args.bos])[0]
    begin, inputs = _forward(decoder, bos_id, device)

    def bare():
        with torch.inference_mode():
            begin()
            for b in batches:
                decoder(**inputs(b))

    def hidden():
        with torch.inference_mode():
            begin()
            for b in batches:
                states = decoder(**inputs(b), output_hidden_states=True).hidden_states
                for h in states:
                    bits.pack_signs(h[:, -1], check=False).cpu()

    built = {}

    def build(dtype=None):
        def go():
            built[dtype] = bd.SignCache.build(model, tok, sites=SITES, tokens=ids,
                                              bos=bos_id is not None, batch_size=args.batch_size,
                                              progress=False, dtype=dtype)
        return go

    tasks = {"bare": bare, "build": build()}
    if not args.no_hidden:
        tasks["hidden"] = hidden
    try:
        from nnsight import LanguageModel  # noqa: F401 - only timed where it is installed
        tasks["nnsight"] = _nnsight_task(decoder, batches, begin, inputs)
    except ImportError:
        pass
    if not args.no_bf16:
        tasks["bf16"] = build("bfloat16")
    for fn in tasks.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {k: [] for k in tasks}
    cpu: dict[str, list[float]] = {k: [] for k in tasks}
    for r in range(args.rounds):  # the order reverses every round, so a drift hurts all alike
        for name, fn in list(tasks.items())[::1 if r % 2 == 0 else -1]:
            w, c = _timed(fn, device)
            wall[name].append(w)
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}

    def ratio(base: str, name: str = "build") -> str:
        """Median over rounds of each round's time ratio (wall; CPU time on a CPU)."""
        def paired(t):
            return statistics.median(b / x for b, x in zip(t[base], t[name]))
        return f"{paired(wall):.3f}" + (f"   (CPU time: {paired(cpu):.3f})" if device.type == "cpu"
                                        else "")

    n = args.tokens
    cache = built[None]
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads), {n:,} tokens, "
          f"{len(cache.sites)} sites, batch {args.batch_size}, "
          f"{'[start, token]' if bos_id is not None else '[token]'} rows, {args.rounds} "
          f"interleaved rounds, medians:")
    for name in tasks:
        spread = f"{min(wall[name]):.2f}..{max(wall[name]):.2f}"
        print(f"  {name:8s} {n / med[name]:8,.0f} tok/s   (wall {med[name]:.2f} s, rounds "
              f"{spread}; CPU {statistics.median(cpu[name]):.2f} s)")
    print("speed ratios (>1: the build is faster): median over rounds of each round's ratio, wall:")
    print(f"  ratio build / ideal bare forward       = {ratio('bare')}")
    if "hidden" in med:
        print(f"  ratio build / HF output_hidden_states  = {ratio('hidden')}")
    if "nnsight" in med:
        print(f"  ratio build / nnsight trace            = {ratio('nnsight')}")
    if "bf16" in med:
        agree = _agreement(cache, built["bfloat16"])
        worst = min(agree, key=agree.get)
        print(f"  bf16 build / float32 build             = {ratio('build', 'bf16')}")
        print(f"  bf16 sign bits identical to float32    = {statistics.mean(agree.values()):.4f} "
              f"mean over sites, min {agree[worst]:.4f} ({worst}), max {max(agree.values()):.4f}")
    meta = cache.meta
    if meta.peak_memory is not None:
        print(f"  build peak memory {meta.peak_memory / 2**20:,.0f} MiB "
              f"({meta.peak_memory_measure}), batch size used {meta.batch_size_used}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(build())
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)


def _nnsight_task(decoder, batches, begin, inputs):
    """The same states traced with nnsight: every layer's output and the final norm's, packed."""
    from nnsight import NNsight

    traced = NNsight(decoder)

    def go():
        with torch.inference_mode():
            begin()
            for b in batches:
                saved = []  # made outside the traced block: nnsight hands back only saved values
                with traced.trace(**inputs(b)):
                    for layer in traced.layers:
                        saved.append(_last(layer.output).save())
                    saved.append(traced.norm.output[:, -1].save())
                for h in saved:
                    bits.pack_signs(h, check=False)
    return go


def _last(output):
    """The last position of a layer's output (a tensor, or a tuple whose first item is one)."""
    return (output[0] if isinstance(output, tuple) else output)[:, -1]


if __name__ == "__main__":
    main()
