"""Benchmark the Hamming readers (bagofdims.signs.hamming, .bits) against faiss, in the same run.

    python scripts/bench_readers.py                 # 1 and 2 threads, default sizes
    python scripts/bench_readers.py --threads 1 --queries 256
    python scripts/bench_readers.py --threads 1 --search-threads 4   # + one index, 4 callers

Workloads (random bits):
  * top-k: ``--queries`` queries against ``--keys`` keys of ``--dim`` bits, top ``-k``, for two
    kinds of query: random rows, and the keys' own rows (self-search, e.g. nearest tokens of a
    cache, where each query finds itself at full agreement). Baseline: faiss ``IndexBinaryFlat``
    (its ties in its own order). Timed: ``HammingIndex.search`` with the default backend, the
    other backend, and the torch kernel as of ``--old-ref`` (read from git, for reference).
    Every index is built before the timed searches. ``--rounds`` interleaved rounds (each round
    runs every method once on both kinds, after one warm-up each, starting one method later
    than the round before, so no method always runs right after the same one); medians are printed, and
    each median's ratio to faiss's median (< 1: faster than faiss).
  * feature scoring: every cached state against ``--features`` features of 10-100 dims each.
  * ``--search-threads T``: T Python threads search one shared default index at once (each
    its share of the queries); checks the results equal the single-caller search.

Checks: all backends return identical results; their agreements equal faiss's distances
row by row; on ``--check-rows`` rows, indices equal a numpy XOR + popcount brute force with
ties to the lowest index. On a machine shared with other work the medians still move between
runs: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bagofdims.signs import bits, hamming

# The torch kernel before the exact-ties faiss default (bf16 with an fp32 fallback for rows
# beyond the bf16-exact range); read from git so the comparison stays in one run.
OLD_REF = "a41d6bb4cdc6bf594c03c5881b7d442a8f048462"


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def load_old_kernel(ref: str) -> types.ModuleType | None:
    """``bagofdims/signs/hamming.py`` as of git ``ref``, as a module (None if unavailable)."""
    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(["git", "show", f"{ref}:bagofdims/signs/hamming.py"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("hamming_old")
    exec(compile(src, f"{ref[:8]}:hamming.py", "exec"), mod.__dict__)
    return mod


def brute_rows(q: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k by (agreement desc, index asc) per row: XOR + popcount in numpy."""
    out = []
    for i in range(0, len(q), 8):  # bounds the [8, m, bytes] temporary
        dist = np.bitwise_count(q[i : i + 8, None, :] ^ keys[None, :, :]).sum(-1, dtype=np.int64)
        out.append(np.argsort(dist, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


BASE = "faiss IndexBinaryFlat (baseline)"


def bench_topk(args: argparse.Namespace) -> None:
    g = torch.Generator().manual_seed(0)
    keys = bits.pack_signs(torch.randn(args.keys, args.dim, generator=g))  # padding bits zero
    kinds = {"random": bits.pack_signs(torch.randn(args.queries, args.dim, generator=g)),
             "self": keys[torch.randperm(args.keys, generator=g)[: args.queries]]}
    default = hamming.resolve_backend("auto", keys.device)
    methods: dict[str, Callable[[torch.Tensor], object]] = {}
    try:
        import faiss

        f_index = faiss.IndexBinaryFlat(keys.shape[1] * 8)
        f_index.add(keys.numpy())
        methods[BASE] = lambda q: f_index.search(q.numpy(), args.k)
    except ImportError:
        print("faiss not installed: no baseline (pip install bagofdims[fast])")
    index = hamming.HammingIndex(keys, args.dim)
    name_default = f"HammingIndex.search default ({default})"
    methods[name_default] = lambda q: index.search(q, args.k)
    other = "faiss" if default == "torch" else "torch"
    if other == "torch" or hamming.hamming_faiss.available():
        o_index = hamming.HammingIndex(keys, args.dim, backend=other)
        methods[f"HammingIndex.search backend={other}"] = lambda q: o_index.search(q, args.k)
    old = load_old_kernel(args.old_ref) if args.old_ref else None
    if old is not None:
        old_index = old.HammingIndex(keys, args.dim)
        methods[f"old torch kernel ({args.old_ref[:7]})"] = lambda q: old_index.search(q, args.k)

    # every (threads, method, query kind) once per round, rounds interleaved
    times: dict[tuple, list[float]] = {}
    outs = {}
    for n in args.threads:
        set_threads(n)
        for name, fn in methods.items():  # warm-up (builds buffers); outputs checked below
            for kind, q in kinds.items():
                outs[(name, kind)] = fn(q)
    names = list(methods)
    for r in range(args.rounds):
        for n in args.threads:
            set_threads(n)
            # each round starts at the next method: no method always follows the same one (a
            # kernel that lowers the clock, e.g. AMX, would otherwise slow whatever comes next)
            for name in names[r % len(names):] + names[: r % len(names)]:
                fn = methods[name]
                for kind, q in kinds.items():
                    t0 = time.perf_counter()
                    fn(q)
                    times.setdefault((n, name, kind), []).append(time.perf_counter() - t0)
    med = {key: statistics.median(v) for key, v in times.items()}
    base = BASE if BASE in methods else None
    for n in args.threads:
        print(f"\n[top-{args.k}] {args.queries} queries x {args.keys} keys x {args.dim} bits, "
              f"{n} thread(s): median wall time of {args.rounds} interleaved rounds")
        print(f"  {'method':<44s} {'random':>8s} {'x faiss':>8s} {'self':>8s} {'x faiss':>8s}")
        for name in methods:
            cells = []
            for kind in kinds:
                t = med[(n, name, kind)]
                cells += [f"{t:7.3f}s", f"x{t / med[(n, base, kind)]:.2f}" if base else "-"]
            print(f"  {name:<44s} {cells[0]:>8s} {cells[1]:>8s} {cells[2]:>8s} {cells[3]:>8s}")

    print("\n[top-k results]")
    for kind, q in kinds.items():
        ours = [outs[(name, kind)] for name in methods if name != base]
        v0, i0 = ours[0]
        same = all(torch.equal(v, v0) and torch.equal(i, i0) for v, i in ours[1:])
        line = f"  {kind}: {len(ours)} HammingIndex variants identical: {same}"
        if base:
            f_dist = outs[(base, kind)][0]
            line += f"; agreements = faiss's: {np.array_equal(args.dim - f_dist, v0.numpy())}"
        rows = min(args.check_rows, len(q))
        if rows:
            want = brute_rows(q[:rows].numpy(), keys.numpy(), args.k)
            line += f"; indices = brute force on {rows} rows: {np.array_equal(want, i0[:rows].numpy())}"
        print(line)

    if args.search_threads > 1:
        set_threads(args.threads[0])
        n_t, q = args.search_threads, kinds["random"]
        vals, idx = outs[(name_default, "random")]
        parts = [q[i::n_t] for i in range(n_t)]
        got: list = [None] * n_t

        def concurrent() -> None:
            def one(i: int) -> None:
                got[i] = index.search(parts[i], args.k)
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n_t)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()

        t = best_time(concurrent, args.rounds)[0]
        same = all(torch.equal(got[i][1], idx[i::n_t]) and torch.equal(got[i][0], vals[i::n_t])
                   for i in range(n_t))
        print(f"  {n_t} callers on one default index ({args.threads[0]} thread(s)): best {t:.3f}s; "
              f"results = single caller's: {same}")


def bench_features(args: argparse.Namespace, threads: int) -> None:
    g = torch.Generator().manual_seed(1)
    states = torch.randn(args.keys, args.dim, generator=g)
    sizes = torch.randint(10, 101, (args.features,), generator=g).tolist()
    feats = [(torch.randperm(args.dim, generator=g)[:s], torch.randint(0, 2, (s,), generator=g) * 2 - 1)
             for s in sizes]
    w = bits.feature_matrix(feats, args.dim)
    packed = bits.pack_signs(states)
    masks, patterns = bits.feature_masks(w)
    print(f"\n[features] {args.keys} states x {args.features} features of 10-100 dims, "
          f"d={args.dim}, {threads} thread(s)")
    t_w = best_time(lambda: bits.feature_matrix(feats, args.dim), args.repeats)[0]
    t_raw, s_raw = best_time(lambda: bits.feature_scores(states, w), args.repeats)
    t_pk, s_pk = best_time(lambda: bits.feature_scores(packed, w), args.repeats)
    t_ma, s_ma = best_time(lambda: bits.masked_agreement(packed, masks, patterns, args.dim),
                           args.repeats)
    print(f"  {'feature_matrix (build dense [d, k])':<52s} {t_w:7.3f} s")
    print(f"  {'feature_scores (raw float states)':<52s} {t_raw:7.3f} s")
    print(f"  {'feature_scores (packed states)':<52s} {t_pk:7.3f} s")
    print(f"  {'masked_agreement (packed states)':<52s} {t_ma:7.3f} s")
    same = torch.equal(s_raw, s_pk) and torch.allclose(
        s_ma.float() / (w != 0).sum(0), s_pk, atol=0, rtol=0)
    print(f"  three forms agree exactly: {same}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--keys", type=int, default=49152)
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--features", type=int, default=200)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="best-of repeats (feature scoring)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (top-k)")
    p.add_argument("--check-rows", type=int, default=64,
                   help="rows checked against a numpy brute force (0 skips it)")
    p.add_argument("--old-ref", default=OLD_REF,
                   help="git revision whose torch kernel is timed for reference ('' skips it)")
    p.add_argument("--search-threads", type=int, default=0,
                   help="also time this many Python threads searching one shared index")
    args = p.parse_args()
    bench_topk(args)
    for n in args.threads:
        set_threads(n)
        bench_features(args, n)


if __name__ == "__main__":
    main()
