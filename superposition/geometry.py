"""Geometry analyses of learned feature directions against data statistics.

All functions take plain tensors / arrays (W as [m, V], binary windows as scipy CSR) so each can
be checked on a planted structure. Vectors of words are the columns ``W[:, i]``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import spearmanr
from bagofdims.errors import InvalidArgument


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def singular_spectrum(W) -> np.ndarray:
    return np.linalg.svd(_np(W), compute_uv=False)


def effective_rank(W) -> float:
    """exp(entropy) of the normalised singular values (Roy & Vetterli)."""
    s = singular_spectrum(W)
    p = s / max(s.sum(), 1e-30)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _offdiag(a: np.ndarray) -> np.ndarray:
    return a[~np.eye(a.shape[0], dtype=bool)]


def gram_cov_corr(W, cov) -> float:
    """Pearson correlation of off-diagonal Gram entries (W^T W) with the off-diagonal covariance."""
    w = _np(W)
    g, c = _offdiag(w.T @ w), _offdiag(_np(cov))
    if g.std() < 1e-12 or c.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(g, c)[0, 1])


def cooccurrence(X: sp.csr_matrix, ids) -> dict[str, np.ndarray]:
    """Phi (binary correlation) and PMI matrices of the chosen words' window occurrences."""
    x = X[:, np.asarray(ids)].toarray().astype(np.float64)
    n = x.shape[0]
    p = x.mean(0)
    joint = (x.T @ x) / n
    denom = np.sqrt(np.outer(p * (1 - p), p * (1 - p)))
    phi = np.where(denom > 0, (joint - np.outer(p, p)) / np.where(denom > 0, denom, 1), 0.0)
    with np.errstate(divide="ignore"):
        pmi = np.log((joint + 1e-12) / (np.outer(p, p) + 1e-12))
    return {"phi": phi, "pmi": pmi, "p": p}


def normalized_columns(W, ids) -> np.ndarray:
    """Unit-norm feature vectors [k, m] of the chosen words."""
    v = _np(W)[:, np.asarray(ids)].T
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred PCA: (coords [k, 2], components [2, d], explained variance ratio [2])."""
    v = vectors - vectors.mean(0)
    u, s, vt = np.linalg.svd(v, full_matrices=False)
    return v @ vt[:2].T, vt[:2], (s[:2] ** 2) / max((s ** 2).sum(), 1e-30)


def ring_order_score(coords: np.ndarray) -> float:
    """Fraction of cyclic neighbours (i, i+1 mod k) that are also neighbours in angular order.

    1.0 is a perfectly ordered ring (either direction); a random arrangement scores ~2/(k-1).
    """
    k = len(coords)
    ang = np.arctan2(coords[:, 1], coords[:, 0])
    pos = np.empty(k, dtype=int)
    pos[np.argsort(ang)] = np.arange(k)
    d = np.abs(pos - np.roll(pos, -1)) % k
    return float(np.mean((d == 1) | (d == k - 1)))


def project_words(W, ring_ids, word_ids, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Normalised columns of ``word_ids`` in the ring's PCA plane (coords [k, 2])."""
    return (normalized_columns(W, word_ids) - mean) @ components.T


def nearest_on_ring(point: np.ndarray, ring_coords: np.ndarray) -> int:
    """Index of the ring member whose angle is closest to the point's angle."""
    a = math.atan2(point[1], point[0])
    ang = np.arctan2(ring_coords[:, 1], ring_coords[:, 0])
    return int(np.argmin(np.abs(np.angle(np.exp(1j * (ang - a))))))


def spearman_cos_cooc(W, X: sp.csr_matrix, ids, measure: str = "phi") -> float:
    """Spearman rank correlation between cos(w_i, w_j) and co-occurrence over all pairs i < j."""
    v = normalized_columns(W, ids)
    cos = v @ v.T
    co = cooccurrence(X, ids)[measure]
    iu = np.triu_indices(len(ids), 1)
    return float(spearmanr(cos[iu], co[iu]).statistic)


def knn_purity(vectors: np.ndarray, labels, k: int = 5) -> float:
    """Mean fraction of each point's k cosine-nearest neighbours with its own label."""
    labels = np.asarray(labels)
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(v) - 1)
    nn = np.argsort(-sim, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


def silhouette(vectors: np.ndarray, labels) -> float:
    """Mean silhouette coefficient with cosine distance."""
    labels = np.asarray(labels)
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dist = 1 - v @ v.T
    uniq = np.unique(labels)
    if len(uniq) < 2:
        raise InvalidArgument("silhouette needs at least two categories")
    member = labels[:, None] == uniq[None, :]                       # [n, c]
    sums = dist @ member                                              # [n, c]
    counts = member.sum(0)
    own = member.argmax(1)
    a = sums[np.arange(len(v)), own] / np.maximum(counts[own] - 1, 1)
    other = np.where(member, np.inf, sums / counts)
    b = other.min(1)
    s = np.where(counts[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def r2_per_column(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column (nan where the target is constant)."""
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)


def linear_decoder_r2(h_train: np.ndarray, x_train: np.ndarray, h_val: np.ndarray,
                      x_val: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Per-word R² on held-out windows of a ridge linear read-out x ≈ h A + c fitted on train."""
    mu_h, mu_x = h_train.mean(0), x_train.mean(0)
    hc = h_train - mu_h
    gram = hc.T @ hc
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    A = np.linalg.solve(gram, hc.T @ (x_train - mu_x))
    return r2_per_column((h_val - mu_h) @ A + mu_x, x_val)


def preactivation_parts(W, b, X: sp.csr_matrix, i: int) -> dict[str, np.ndarray]:
    """For word i over the windows X: bias b_i, self |w_i|^2 x_i, interference sum_{j!=i} w_i.w_j x_j."""
    w = _np(W)
    g = w.T @ w[:, i]                       # [V] = w_j . w_i
    xi = np.asarray(X[:, i].todense()).ravel()
    total_in = X @ g                        # sum over active j of w_i . w_j
    self_part = g[i] * xi
    return {"bias": np.full(X.shape[0], float(_np(b)[i])), "self": self_part,
            "interference": total_in - self_part, "present": xi > 0}


def group_interference(W, ids) -> float:
    """Off-diagonal Frobenius norm of a word group's Gram matrix W_G^T W_G."""
    w = _np(W)[:, np.asarray(ids)]
    return float(np.linalg.norm(_offdiag(w.T @ w)))
