"""Benchmark the Hamming readers (bagofdims.signs.hamming, .bits) against faiss, in the same run.

    python scripts/bench_readers.py                 # 1 and 2 threads, default sizes
    python scripts/bench_readers.py --threads 1 --queries 256
    python scripts/bench_readers.py --threads 1 --search-threads 4   # + one index, 4 callers

Workloads (random bits; timings do not depend on the data):
  * top-k: ``--queries`` query states against ``--keys`` cached states of ``--dim`` bits, top ``-k``.
    Baseline: faiss ``IndexBinaryFlat`` (skipped if faiss is not installed). Both indexes are
    built before the timed searches; the one-shot ``hamming_topk`` also times unpacking.
  * feature scoring: every cached state against ``--features`` features of 10-100 dims each.
  * ``--search-threads T``: T Python threads search one shared ``HammingIndex`` at once (each
    its share of the queries); checks the results equal the single-caller search.
Prints best-of-``--repeats`` wall time per method and its ratio to the faiss baseline
(ratio < 1 means faster than faiss), and checks that the results match faiss's (ties aside).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Callable

import numpy as np
import torch

from bagofdims.signs import bits, hamming


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


def check_against_faiss(values: torch.Tensor, idx: torch.Tensor, f_dist: np.ndarray,
                        f_idx: np.ndarray, agree_all: Callable[[np.ndarray], np.ndarray], d: int) -> str:
    """Same agreement values row by row, and the same keys above each row's k-th value."""
    f_vals = d - torch.from_numpy(f_dist.astype(np.int64))
    if not torch.equal(values.long(), f_vals):
        return "MISMATCH (values)"
    kth = f_vals[:, -1:]
    ours = [set(r[v > t].tolist()) for r, v, t in zip(idx, values.long(), kth)]
    theirs = [set(r[v > t].tolist()) for r, v, t in zip(torch.from_numpy(f_idx), f_vals, kth)]
    if ours != theirs:
        return "MISMATCH (indices)"
    # ties at the k-th value: each returned index must really have that agreement
    rows = agree_all(idx.numpy())
    if not np.array_equal(rows, values.numpy()):
        return "MISMATCH (tied indices)"
    return "identical (tie order aside)"


def bench_topk(args: argparse.Namespace, threads: int) -> None:
    g = torch.Generator().manual_seed(0)
    nb = bits.packed_width(args.dim)
    q = torch.randint(0, 256, (args.queries, nb), dtype=torch.uint8, generator=g)
    keys = torch.randint(0, 256, (args.keys, nb), dtype=torch.uint8, generator=g)
    q_bits, k_bits = bits.pack_signs(bits.unpack_signs(q, args.dim)), bits.pack_signs(
        bits.unpack_signs(keys, args.dim))  # zero the padding bits for faiss
    print(f"\n[top-{args.k}] {args.queries} queries x {args.keys} keys x {args.dim} bits, "
          f"{threads} thread(s)")
    results: dict[str, float] = {}
    base = None
    try:
        import faiss

        index = faiss.IndexBinaryFlat(nb * 8)
        index.add(k_bits.numpy())
        base, (f_dist, f_idx) = best_time(lambda: index.search(q_bits.numpy(), args.k), args.repeats)
        results["faiss IndexBinaryFlat"] = base
    except ImportError:
        print("  faiss not installed: no baseline (pip install bagofdims[fast])")

    # like faiss's index, ours is built once outside the timed search (it unpacks the keys)
    index = hamming.HammingIndex(k_bits, args.dim)
    t, (vals, idx) = best_time(lambda: index.search(q_bits, args.k), args.repeats)
    results["hamming.HammingIndex.search"] = t
    results["hamming.hamming_topk (one-shot: unpacks keys too)"] = best_time(
        lambda: hamming.hamming_topk(q_bits, k_bits, args.dim, args.k), args.repeats)[0]

    qf = bits.unpack_signs(q_bits, args.dim, torch.float32)
    kf = bits.unpack_signs(k_bits, args.dim, torch.float32)
    results["fp32 +-1 matmul + topk (full matrix)"] = best_time(
        lambda: torch.topk(qf @ kf.T, args.k, dim=1), args.repeats)[0]

    if args.numpy_rows:
        k64 = np.ascontiguousarray(np.pad(k_bits.numpy(), ((0, 0), (0, (-nb) % 8)))).view(np.uint64)
        q64 = np.ascontiguousarray(np.pad(q_bits.numpy(), ((0, 0), (0, (-nb) % 8)))).view(np.uint64)
        rows = min(args.numpy_rows, args.queries)

        def np_naive() -> None:
            for i in range(rows):
                dist = np.bitwise_count(q64[i] ^ k64).sum(1)
                np.argpartition(dist, args.k)[: args.k]

        t_np = best_time(np_naive, 1)[0] * args.queries / rows
        results[f"numpy bitwise_count (extrapolated from {rows} rows)"] = t_np

    if args.search_threads > 1:
        n_t = args.search_threads
        parts = [q_bits[i::n_t] for i in range(n_t)]
        got: list = [None] * n_t

        def concurrent() -> None:
            def one(i: int) -> None:
                got[i] = index.search(parts[i], args.k)
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n_t)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()

        results[f"HammingIndex.search, {n_t} callers on one index"] = best_time(concurrent, args.repeats)[0]
        same = all(torch.equal(got[i][1], idx[i::n_t]) and torch.equal(got[i][0], vals[i::n_t])
                   for i in range(n_t))
        print(f"  {n_t} concurrent callers give the single-caller results: {same}")

    for name, t in results.items():
        ratio = f"  x{t / base:.2f} of faiss" if base else ""
        print(f"  {name:<52s} {t:7.3f} s{ratio}")
    if base is not None:
        status = check_against_faiss(vals, idx, f_dist, f_idx, lambda ix: _agree_rows(
            q_bits, k_bits, ix, args.dim), args.dim)
        print(f"  results vs faiss: {status}")


def _agree_rows(q: torch.Tensor, keys: torch.Tensor, ix: np.ndarray, d: int) -> np.ndarray:
    """Agreement of each query with each of its own returned keys, [n, k]."""
    pm_q = bits.unpack_signs(q, d, torch.int32)
    pm_k = bits.unpack_signs(keys[torch.from_numpy(ix)], d, torch.int32)  # [n, k, d]
    return (((pm_q[:, None, :] * pm_k).sum(-1) + d) // 2).to(torch.int32).numpy()


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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--search-threads", type=int, default=0,
                   help="also time this many Python threads searching one shared index")
    p.add_argument("--numpy-rows", type=int, default=64,
                   help="queries for the naive numpy baseline (extrapolated; 0 skips it)")
    args = p.parse_args()
    for n in args.threads:
        set_threads(n)
        bench_topk(args, n)
        bench_features(args, n)


if __name__ == "__main__":
    main()
