"""Benchmark: batched logistic probes for every category vs scikit-learn one category at a time.

Synthetic data shaped like the real problem: X = [49,152 tokens, 576 dims] Gaussian (or its ±1
signs), 200 categories with 50 positive rows each, every category planted on its own set of
dims with its own signs. Times `LogisticProbe` on all categories at once, then sklearn's
LogisticRegression (lbfgs, class_weight="balanced", same regularisation via C = 1 / (l2 * n))
on a few categories in the same run, and reports the per-category time ratio and AUC parity
on a fresh test set.

    python scripts/bench_probes.py                 # Gaussian states
    python scripts/bench_probes.py --signs         # ±1 signs
    python scripts/bench_probes.py --device cuda   # our probe on GPU (sklearn stays on CPU)
"""

from __future__ import annotations

import argparse
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import time

import numpy as np
import torch

from probes import LogisticProbe, sign_agreement


def make_data(n, d, k, n_pos, n_dims, delta, signs, gen):
    """Rows with positives of category j shifted by delta * sign on dims[j]; returns X, Y, dims, sgn."""
    dims = torch.stack([torch.randperm(d, generator=gen)[:n_dims] for _ in range(k)])
    sgn = torch.randint(0, 2, (k, n_dims), generator=gen) * 2 - 1
    X = torch.randn(n, d, generator=gen)
    rows = torch.randperm(n, generator=gen)[: k * n_pos].view(
        k, n_pos
    )  # disjoint positives
    Y = torch.zeros(n, k, dtype=torch.bool)
    Y[rows, torch.arange(k)[:, None]] = True
    shift = torch.zeros(k, d)
    shift.scatter_(1, dims, delta * sgn.float())
    X[rows.flatten()] += shift.repeat_interleave(n_pos, 0)
    return (torch.sign(X) if signs else X), Y, dims, sgn


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=49_152)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument(
        "--pos", type=int, default=50, help="training positives per category"
    )
    ap.add_argument(
        "--test-pos", type=int, default=20, help="test positives per category"
    )
    ap.add_argument("--n-test", type=int, default=8192)
    ap.add_argument("--dims", type=int, default=16, help="planted dims per category")
    ap.add_argument("--delta", type=float, default=0.75, help="planted shift per dim")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument(
        "--signs", action="store_true", help="use ±1 signs instead of Gaussian states"
    )
    ap.add_argument("--sk-categories", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    X, Y, dims, sgn = make_data(a.n, a.d, a.k, a.pos, a.dims, a.delta, a.signs, gen)
    # Fresh test rows from the same distribution (the planted dims/signs are reused).
    Xt = torch.randn(a.n_test, a.d, generator=gen)
    rows = torch.randperm(a.n_test, generator=gen)[: a.k * a.test_pos].view(
        a.k, a.test_pos
    )
    Yt = torch.zeros(a.n_test, a.k, dtype=torch.bool)
    Yt[rows, torch.arange(a.k)[:, None]] = True
    shift = torch.zeros(a.k, a.d).scatter_(1, dims, a.delta * sgn.float())
    Xt[rows.flatten()] += shift.repeat_interleave(a.test_pos, 0)
    Xt = torch.sign(Xt) if a.signs else Xt
    kind = "±1 signs" if a.signs else "Gaussian states"
    print(
        f"data: X [{a.n}, {a.d}] {kind}, {a.k} categories x {a.pos} positives, "
        f"{a.dims} planted dims (delta {a.delta}); threads={a.threads}, device={a.device}"
    )

    Xd, Yd = X.to(a.device), Y.to(a.device)
    if a.device.startswith("cuda"):
        LogisticProbe(l2=a.l2, max_iter=2).fit(
            Xd[:1024],
            Yd[:1024, :2] | (torch.arange(1024, device=a.device) < 8)[:, None],
        )
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    probe = LogisticProbe(l2=a.l2).fit(Xd, Yd)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t0
    auc_ours = probe.auc(Xt.to(a.device), Yt.to(a.device)).cpu()
    agree = sign_agreement(probe.weights.cpu(), list(dims), list(sgn))
    print(
        f"ours   : {a.k} categories batched in {t_ours:.2f} s ({t_ours / a.k * 1e3:.1f} ms/category); "
        f"iterations mean {probe.n_iter_.float().mean():.1f} max {int(probe.n_iter_.max())}; "
        f"converged {int(probe.converged_.sum())}/{a.k}"
    )
    print(
        f"         test AUC mean {auc_ours.mean():.4f} (min {auc_ours.min():.4f}); "
        f"sign agreement with planted dims mean {agree.mean():.4f}"
    )

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(a.threads)
    except ImportError:  # the environment variables above already pin BLAS threads
        limit = None
    kk = min(a.sk_categories, a.k)
    scaler = StandardScaler().fit(X.numpy())
    Xs, Xts = scaler.transform(X.numpy()), scaler.transform(Xt.numpy())
    C = probe.sklearn_C()
    # sklearn's lbfgs minimises the same normalised objective and stops on the same max-abs
    # gradient, so tol=probe.tol is the like-for-like run; its default tol=1e-4 is also timed.
    times = {probe.tol: 0.0, 1e-4: 0.0}
    diffs, wdiff = [], []
    for j in range(kk):
        for tol in times:
            t0 = time.perf_counter()
            sk = LogisticRegression(
                C=C, class_weight="balanced", solver="lbfgs", tol=tol, max_iter=1000
            )
            sk.fit(Xs, Y[:, j].numpy())
            times[tol] += time.perf_counter() - t0
            if tol != probe.tol:
                continue
            auc_sk = roc_auc_score(Yt[:, j].numpy(), sk.decision_function(Xts))
            diffs.append(abs(auc_sk - auc_ours[j].item()))
            w = probe.weights_std[:, j].cpu().numpy()
            wdiff.append(np.abs(sk.coef_[0] - w).max() / np.abs(sk.coef_[0]).max())
            print(
                f"sklearn: category {j} (tol={tol:g}): {time.perf_counter() - t0:.2f} s, {int(sk.n_iter_[0])} it, "
                f"test AUC {auc_sk:.5f} vs ours {auc_ours[j]:.5f} (|diff| {diffs[-1]:.1e}); "
                f"max |w diff| / max |w| {wdiff[-1]:.1e}"
            )
    if limit is not None and hasattr(limit, "unregister"):
        limit.unregister()
    per_ours = t_ours / a.k
    for tol, t_sk in times.items():
        per_sk = t_sk / kk
        print(
            f"sklearn tol={tol:g}: {kk} categories in {t_sk:.2f} s ({per_sk * 1e3:.0f} ms/category), "
            f"extrapolated to {a.k}: {per_sk * a.k:.1f} s; sklearn / ours per category = {per_sk / per_ours:.1f}x"
        )
    print(
        f"parity : max |test AUC diff| over {kk} categories = {max(diffs):.1e}; "
        f"max relative weight diff = {max(wdiff):.1e}"
    )


if __name__ == "__main__":
    main()
