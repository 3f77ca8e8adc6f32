"""Figures of the mechanisms: constructive interference, value coding, shapes, antipodal pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import _save, plt


def plot_interference(alone: np.ndarray, detail: dict | None, path: Path) -> str:
    """Left: one-hot pre-activation |w|² + b of the frequent words (those <= 0 are off alone).
    Middle: the target's pre-activation in held-out windows with and without it.
    Right: the partners that add most to it (mean contribution over its contexts)."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].hist(alone, bins=50, color="tab:gray")
    ax[0].axvline(0, color="k", lw=1)
    ax[0].set_xlabel("one-hot pre-activation |w_i|² + b_i")
    ax[0].set_title(f"{int((alone <= 0).sum())} of {len(alone)} frequent words off alone", fontsize=9)
    if detail is None:
        for a in ax[1:]:
            a.text(0.5, 0.5, "no word switched on by context", ha="center", va="center", transform=a.transAxes)
            a.set_axis_off()
        return _save(fig, path)
    d = detail
    bins = np.linspace(min(d["pre_present"].min(), d["pre_absent"].min()),
                       max(d["pre_present"].max(), d["pre_absent"].max(), d["alone_preactivation"]), 40)
    ax[1].hist(d["pre_absent"], bins=bins, alpha=0.5, density=True, label="windows without it")
    ax[1].hist(d["pre_present"], bins=bins, alpha=0.6, density=True, label="windows with it")
    ax[1].axvline(0, color="k", lw=1)
    ax[1].axvline(d["alone_preactivation"], color="tab:red", ls="--", label="alone")
    ax[1].set_xlabel(f"pre-activation of '{d['word']}'")
    ax[1].set_title(f"'{d['word']}': on in {d['on_present']:.0%} of {d['contexts']} contexts, "
                    f"{d['on_absent']:.1%} without it", fontsize=9)
    ax[1].legend(fontsize=7)
    parts = d["partners"][::-1]
    ax[2].barh([p["word"] for p in parts], [p["mean_contribution"] for p in parts], color="tab:green")
    ax[2].set_xlabel("mean contribution (w_i·w_j) P(j | i)")
    ax[2].set_title(f"bias {d['bias']:.2f}, self {d['self']:.2f}, interference "
                    f"{d['mean_interference_present']:.2f} (mean)", fontsize=9)
    return _save(fig, path)


def plot_values(results: dict[str, dict], path: Path) -> str:
    """Out-of-fold ridge predictions vs the true values, one panel per target."""
    panels = [(name, t, k) for name, r in results.items() if "predictions" in r
              for k, t in enumerate(r["targets"])]
    fig, ax = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 4), squeeze=False)
    for a, (name, t, k) in zip(ax[0], panels):
        r = results[name]
        y, p = np.asarray(r["predictions"]["true"])[:, k], np.asarray(r["predictions"]["pred"])[:, k]
        a.scatter(y, p, s=12)
        lo, hi = min(y.min(), p.min()), max(y.max(), p.max())
        a.plot([lo, hi], [lo, hi], color="gray", lw=1)
        for w, yy, pp in list(zip(r["predictions"]["words"], y, p))[:: max(1, len(y) // 15)]:
            a.annotate(w, (yy, pp), fontsize=6)
        s = r[t]
        a.set_title(f"{name} {t}: held-out R² {s['r2']:.2f}\nshuffled null mean {s['null_mean']:.2f}, "
                    f"95% {s['null_q95']:.2f}, p {s['p']:.3f}", fontsize=8)
        a.set_xlabel("true")
        a.set_ylabel("predicted (out of fold)")
    return _save(fig, path)


def _pca(w: np.ndarray, d: int) -> np.ndarray:
    v = w.T / np.maximum(np.linalg.norm(w.T, axis=1, keepdims=True), 1e-12)
    v = v - v.mean(0)
    return v @ np.linalg.svd(v, full_matrices=False)[2][:d].T


def plot_shapes(arrays: dict, metrics: dict, path: Path) -> str:
    """Per shape: the true feature points, then the top principal components of the unit feature
    directions at each decay, coloured by the feature's position along the shape."""
    shapes = list(arrays)
    wds = sorted(arrays[shapes[0]][1])
    fig, ax = plt.subplots(len(shapes), 1 + len(wds), figsize=(3.3 * (1 + len(wds)), 3.2 * len(shapes)), squeeze=False)
    for r, shape in enumerate(shapes):
        pts, ws = arrays[shape]
        # a closed curve is coloured cyclically by position; a sphere by height (z)
        col, cmap = (np.arange(len(pts)), "hsv") if pts.shape[1] == 2 else (pts[:, 2], "viridis")
        ax[r, 0].scatter(pts[:, 0], pts[:, 1], c=col, cmap=cmap, s=18)
        ax[r, 0].set_title(f"{shape}: true points" + (" (x, y; colour = z)" if pts.shape[1] > 2 else ""), fontsize=8)
        for c, wd in enumerate(wds, 1):
            xy = _pca(ws[wd], 2)
            ax[r, c].scatter(xy[:, 0], xy[:, 1], c=col, cmap=cmap, s=18)
            if shape != "sphere":
                ax[r, c].plot(np.r_[xy[:, 0], xy[:1, 0]], np.r_[xy[:, 1], xy[:1, 1]], color="gray", lw=0.5)
            run = next(x for x in metrics["runs"] if x["structure"] == shape and x["weight_decay"] == wd)
            ax[r, c].set_title(f"W, wd {wd:g}: kNN {run['knn']['value']:.2f} (shuf {run['knn']['shuffled_mean']:.2f}), "
                               f"Procr. {run['procrustes']['value']:.2f}", fontsize=7)
        for a in ax[r]:
            a.set_xticks([])
            a.set_yticks([])
    return _save(fig, path)


def plot_antipodal(planted: dict, planted_cos: tuple[np.ndarray, np.ndarray], words: dict | None, path: Path) -> str:
    """Cosines of planted exclusive pairs vs other pairs (synthetic) and of never-co-occurring
    word pairs vs frequency-matched pairs (trained run)."""
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    bins = np.linspace(-1, 1, 41)
    ax[0].hist(planted_cos[1], bins=bins, alpha=0.5, density=True, label="other pairs")
    ax[0].hist(planted_cos[0], bins=bins, alpha=0.7, density=True, label="exclusive pairs")
    ax[0].set_title(f"synthetic: {planted['features']} features in exclusive pairs, m {planted['latent']}", fontsize=9)
    ax[0].set_xlabel("cos(w_a, w_b)")
    ax[0].legend(fontsize=7)
    if words is None or words["never"]["n"] == 0:
        ax[1].text(0.5, 0.5, "no never-co-occurring frequent pair", ha="center", va="center", transform=ax[1].transAxes)
    else:
        ax[1].hist(words["cos_control"], bins=bins, alpha=0.5, density=True, label="pairs that co-occur")
        ax[1].hist(words["cos_never"], bins=bins, alpha=0.7, density=True, label="pairs that never co-occur")
        ax[1].set_title(f"words: {words['never']['n']} never-co-occurring pairs (expected >= "
                        f"{words['min_expected']:g})", fontsize=9)
        ax[1].legend(fontsize=7)
    ax[1].set_xlabel("cos(w_a, w_b)")
    return _save(fig, path)
