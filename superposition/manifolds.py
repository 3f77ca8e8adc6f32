"""Figure-8 and sphere: does a tied ReLU autoencoder's weight geometry recover a known latent shape?

Features sit at known points ``c_i`` of a figure-8 or a sphere, and a sample fires the features
near a random point of the same shape (:func:`superposition.synthetic.sample`), so co-occurrence
falls with distance on the shape. After training, the feature directions (columns of W) are
compared with the true points by three numbers, each next to its shuffled control (the same
statistic after permuting which true point belongs to which feature, so the learned geometry is
kept and only its correspondence to the truth is broken):

- ``spearman``: rank correlation of the pairwise learned distances ``1 - cos(w_i, w_j)`` with the
  true distances ``|c_i - c_j|``;
- ``knn``: mean fraction of each feature's k nearest true neighbours that are also among its k
  nearest learned neighbours (cosine);
- ``procrustes``: 1 - disparity of an orthogonal Procrustes fit of the true points to the top
  principal components of the unit feature directions (same number of components as the shape's
  dimension; 1 = the same shape up to rotation, scale and reflection).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import procrustes
from scipy.stats import spearmanr

from .geometry import effective_rank, gram_cov_corr
from .synthetic import SyntheticConfig, feature_points, train_sweep


def _unit(W) -> np.ndarray:
    v = np.asarray(W, np.float64).T
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _stats(v: np.ndarray, pts: np.ndarray, k: int) -> np.ndarray:
    n = len(pts)
    iu = np.triu_indices(n, 1)
    dl = 1 - v @ v.T
    dt = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    rho = spearmanr(dl[iu], dt[iu]).statistic
    big = np.eye(n) * 1e9
    nl, nt = np.argsort(dl + big, 1)[:, :k], np.argsort(dt + big, 1)[:, :k]
    knn = np.mean([len(set(a) & set(b)) / k for a, b in zip(nl, nt)])
    c = v - v.mean(0)
    coords = c @ np.linalg.svd(c, full_matrices=False)[2][: pts.shape[1]].T
    _, _, disp = procrustes(pts, coords)
    return np.array([rho, knn, 1 - disp])


def recovery(W, points, k: int = 4, n_shuffles: int = 200, seed: int = 0) -> dict:
    """The three recovery numbers of W [m, n] against true points [n, d], each with its
    shuffled control (mean, 95th percentile, p = (1 + #shuffled >= observed) / (1 + n_shuffles))."""
    v, pts = _unit(W), np.asarray(points, np.float64)
    obs = _stats(v, pts, k)
    rng = np.random.default_rng(seed)
    null = np.stack([_stats(v, pts[rng.permutation(len(pts))], k) for _ in range(n_shuffles)])
    out = {}
    for j, name in enumerate(("spearman", "knn", "procrustes")):
        out[name] = {"value": float(obs[j]), "shuffled_mean": float(null[:, j].mean()),
                     "shuffled_q95": float(np.quantile(null[:, j], 0.95)),
                     "p": float((1 + (null[:, j] >= obs[j]).sum()) / (1 + n_shuffles))}
    out["k"] = k
    return out


@dataclass
class ManifoldConfig:
    """Settings of the figure-8 / sphere runs (every field also names a SyntheticConfig field)."""
    structures: str = "figure8,sphere"
    """Comma list of shapes: figure8, sphere (circle also works)."""
    features: int = 40
    """Features placed on each shape (points of the shape at even parameter steps)."""
    latent: int = 40
    """Latent width m; equal to the features, so any geometry comes from the data and the decay,
    not from a bottleneck."""
    weight_decay: str = "0.1,6"
    """Comma list of decoupled weight decays (a weak and a strong one)."""
    steps: int = 3000
    """Adam steps."""
    lr: float = 1e-2
    """Peak learning rate (cosine to 0)."""
    width: float = 0.35
    """Width of each feature's firing bump on the shape."""
    p_max: float = 1.0
    """Firing probability of a feature when the sample's point sits on it."""
    shuffles: int = 200
    """Shuffled controls per recovery number."""
    seed: int = 0
    """Seed of weights and samples."""


def run_manifolds(cfg: ManifoldConfig) -> tuple[dict, dict]:
    """Train ReLU models on each shape at each decay; metrics per (shape, wd), and the weights
    and true points for the figure (``{shape: (points, {wd: W})}``)."""
    metrics, arrays = {"config": asdict(cfg), "runs": []}, {}
    for shape in cfg.structures.split(","):
        syn = SyntheticConfig(structure=shape, features=cfg.features, latent=str(cfg.latent),
                              weight_decay=cfg.weight_decay, models="relu", steps=cfg.steps, lr=cfg.lr,
                              p_max=cfg.p_max, width=cfg.width, seed=cfg.seed)
        specs, W, cov = train_sweep(syn)
        pts = feature_points(shape, cfg.features).numpy()
        arrays[shape] = (pts, {})
        for k, s in enumerate(specs):
            w = W[k, : s["latent"]].numpy()
            arrays[shape][1][s["weight_decay"]] = w
            metrics["runs"].append({"structure": shape, "weight_decay": s["weight_decay"], "loss": s["loss"],
                                    "effective_rank": effective_rank(w), "gram_cov_corr": gram_cov_corr(w, cov),
                                    "lr_x_wd_x_steps": s["lr_x_wd_x_steps"], **recovery(w, pts, n_shuffles=cfg.shuffles, seed=cfg.seed)})
    return metrics, arrays
