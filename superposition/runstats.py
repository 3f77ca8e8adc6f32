"""The numbers of one trained run that a sweep tabulates (no figures): loss, rank, interference,
months ring and linear read-out, linear vs non-linear superposition, clusters, constructive
interference. Everything is measured on held-out windows where a read-out is fitted."""
from __future__ import annotations

import numpy as np
import torch

from . import geometry as G
from .categories import CATEGORIES, present
from .corpus import MONTHS
from .data import BowsData, rows_to_batch

GROUPS = ("months", "days", "roman", "planets")


def group_cosine_interference(W, ids) -> float:
    """Off-diagonal Frobenius norm of the group's cosine matrix (scale-free, unlike the Gram's)."""
    v = G.normalized_columns(W, ids)
    c = v @ v.T
    return float(np.linalg.norm(c[~np.eye(len(ids), dtype=bool)]))


def alone_nonpositive(W, b, X, top) -> dict:
    """Frequent words whose one-hot pre-activation |w_i|² + b_i is <= 0, and how often their
    pre-activation in held-out windows X is still > 0 where they occur (pushed up by co-occurring
    words) vs where they do not."""
    w, bb = W.double().numpy(), b.double().numpy()
    alone = (w ** 2).sum(0) + bb
    neg = np.asarray([int(i) for i in top if alone[int(i)] <= 0], dtype=np.int64)
    out = {"ci_words": int(len(neg)), "ci_on_present": None, "ci_on_absent": None}
    if len(neg):
        pre = np.asarray(X @ (w.T @ w[:, neg])) + bb[neg]
        pres = X[:, neg].toarray() > 0
        on = pre > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (on & pres).sum(0) / pres.sum(0)
            a = (on & ~pres).sum(0) / (~pres).sum(0)
        out.update(ci_on_present=float(np.nanmean(p)) if np.isfinite(p).any() else None,
                   ci_on_absent=float(np.nanmean(a)) if np.isfinite(a).any() else None)
    return out


@torch.no_grad()
def run_stats(model, data: BowsData, max_windows: int = 4000, top_words: int = 1000,
              threshold: float = 0.5, seed: int = 0) -> dict:
    """One row of the sweep table for a trained model (see the module docstring)."""
    W, b = model.W.detach().float().cpu(), model.b.detach().float().cpu()
    Xtr, Xva = data.split("train"), data.split("val")
    rng = np.random.default_rng(seed)
    tr = np.sort(rng.choice(Xtr.shape[0], min(max_windows, Xtr.shape[0]), replace=False))
    va = np.arange(min(max_windows, Xva.shape[0]))
    idx = data.index
    h_tr = model.encode(rows_to_batch(Xtr, tr)).float().cpu()
    h_va = model.encode(rows_to_batch(Xva, va)).float().cpu()
    x_va = Xva[va].toarray()
    r2_model = G.r2_per_column(model.decode(h_va).float().cpu().numpy(), x_va)
    r2_lin = G.linear_decoder_r2(h_tr.numpy(), Xtr[tr].toarray(), h_va.numpy(), x_va)
    ok = np.isfinite(r2_model) & np.isfinite(r2_lin)  # words present in some held-out window
    lin = ok & (r2_lin > threshold)
    row = {"words_scored": int(ok.sum()), "model_r2_median": float(np.median(r2_model[ok])),
           "linear_r2_median": float(np.median(r2_lin[ok])),
           "linearly_superposed": int(lin.sum()),
           "nonlinearly_superposed": int((ok & (r2_model > threshold) & ~lin).sum())}
    months = present(MONTHS, idx)
    mid = [idx[w] for w in months]
    if len(mid) >= 3:
        coords, _, _ = G.pca_2d(G.normalized_columns(W, mid))
        row["months_ring_order"] = G.ring_order_score(coords)
        r2m = r2_lin[mid]
        row["months_linear_r2"] = float(np.nanmean(r2m)) if np.isfinite(r2m).any() else None
    for name in GROUPS:
        ids = [idx[w] for w in present(CATEGORIES[name], idx)]
        if len(ids) >= 3:
            row[f"{name}_interference"] = G.group_interference(W, ids)
            row[f"{name}_cos_interference"] = group_cosine_interference(W, ids)
    words, labels = [], []
    for name, ws in CATEGORIES.items():
        ws = present(ws, idx)
        if len(ws) >= 3:
            words += ws
            labels += [name] * len(ws)
    if len(set(labels)) >= 2:
        v = G.normalized_columns(W, [idx[w] for w in words])
        row["knn_purity"] = G.knn_purity(v, labels)
        row["knn_purity_shuffled"] = G.knn_purity(v, rng.permutation(labels))
    top = np.argsort(-data.frequency)[:top_words]
    row["spearman_cos_phi"] = G.spearman_cos_cooc(W, Xtr[tr], [int(i) for i in top[:300]], "phi")
    row.update(alone_nonpositive(W, b, Xva[va], top))
    row["effective_rank"] = G.effective_rank(W)
    row["weight_norm_sq"] = float(W.square().sum())
    return row
