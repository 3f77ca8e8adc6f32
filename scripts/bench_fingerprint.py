"""Seconds per GB of hashing every weight: candidate hashes vs plain sha256 over copied bytes.

Two weight sets: SmolLM2-135M (float32, CPU) and random float32 tensors (``--gb``). Rounds are
interleaved (the order rotates each round) and medians reported, wall and CPU seconds (the CPU
column is the one-core cost when the machine is shared). ``baseline`` is
``hashlib.sha256(t.numpy().tobytes())`` per tensor; the others hash the tensor's memory in place.
``chosen`` is ``weight_fingerprint(model, refresh=True)`` (names, shapes, dtypes included);
``cached`` is a repeated call on the unchanged model.

    python scripts/bench_fingerprint.py [--rounds 5] [--gb 1]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import torch
from bagofdims.models import ALGORITHM, load_model, weight_fingerprint


def _unique(model) -> list:
    seen = {}
    for t in model.state_dict().values():
        seen.setdefault(t.data_ptr(), t.detach().reshape(-1).contiguous().view(torch.uint8).numpy())
    return list(seen.values())


def candidates(model) -> dict:
    arrays = _unique(model)

    def run(make, copy=False):
        def go():
            for a in arrays:
                make(a.tobytes() if copy else a).digest()
        return go

    out = {"baseline": run(hashlib.sha256, copy=True), "sha256": run(hashlib.sha256),
           "blake2b": run(hashlib.blake2b)}
    try:
        import xxhash

        out["xxh3_128"] = run(xxhash.xxh3_128)
    except ImportError:
        pass
    out["chosen"] = lambda: weight_fingerprint(model, refresh=True)
    out["cached"] = lambda: weight_fingerprint(model)
    return out, sum(a.nbytes for a in arrays)


def bench(label: str, model, rounds: int) -> None:
    funcs, n_bytes = candidates(model)
    weight_fingerprint(model)  # warm: pages touched once, cache filled
    wall = {k: [] for k in funcs}
    cpu = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            funcs[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    gb = n_bytes / 1e9
    base = statistics.median(wall["baseline"])
    print(f"\n{label}: {n_bytes / 1e6:.0f} MB hashed, {rounds} rounds (medians)")
    print(f"{'candidate':<10} {'wall s/GB':>10} {'cpu s/GB':>9} {'vs baseline':>12}")
    for k in names:
        med = statistics.median(wall[k])
        print(f"{k:<10} {med / gb:10.3f} {statistics.median(cpu[k]) / gb:9.3f} {base / med:11.2f}x")


class _Random(torch.nn.Module):
    def __init__(self, gb: float, chunk: int = 1 << 24):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        n = max(1, round(gb * 1e9 / 4 / chunk))
        self.w = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(chunk, generator=g), requires_grad=False)
            for _ in range(n))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--gb", type=float, default=1.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"chosen algorithm: {ALGORITHM}; torch threads 1")
    model, _ = load_model("smollm2", device="cpu")
    bench("SmolLM2-135M (float32)", model, args.rounds)
    del model
    bench(f"random float32 ({args.gb:g} GB)", _Random(args.gb), args.rounds)


if __name__ == "__main__":
    main()
