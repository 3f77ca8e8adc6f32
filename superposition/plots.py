"""PNG plots of the analyses (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bagofdims.storage import atomic_file  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    with atomic_file(path, "wb") as f:  # a killed run never leaves half a PNG
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
    return path.name


def plot_synthetic(specs, W, cov, out: Path) -> list[str]:
    """Gram matrices at the largest latent of each (model, wd) beside the data covariance, and
    gram_cov_corr against latent size."""
    out = Path(out)
    groups = sorted({(s["model"], s["weight_decay"]) for s in specs})
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(3 * (len(groups) + 1), 3))
    axes[0].imshow(cov.numpy(), cmap="RdBu_r")
    axes[0].set_title("data covariance")
    for ax, (model, wd) in zip(axes[1:], groups):
        k = max((i for i, s in enumerate(specs) if s["model"] == model and s["weight_decay"] == wd
                 and s["latent"] == 8), default=None)
        if k is None:
            k = max(i for i, s in enumerate(specs) if s["model"] == model and s["weight_decay"] == wd)
        w = W[k, : specs[k]["latent"]]
        ax.imshow((w.T @ w).numpy(), cmap="RdBu_r")
        ax.set_title(f"{model} wd={wd} m={specs[k]['latent']}", fontsize=8)
    names = [_save(fig, out / "synthetic_gram.png")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model, wd in groups:
        pts = sorted((s["latent"], s["gram_cov_corr"]) for s in specs if s["model"] == model and s["weight_decay"] == wd)
        ax.plot(*zip(*pts), marker="o", label=f"{model} wd={wd}")
    ax.set_xlabel("latent m")
    ax.set_ylabel("corr(Gram, covariance)")
    ax.legend(fontsize=8)
    names.append(_save(fig, out / "synthetic_corr.png"))
    return names


def plot_matrix(mat: np.ndarray, labels, title: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-np.abs(mat).max(), vmax=np.abs(mat).max())
    ax.set_xticks(range(len(labels)), [l[:3] for l in labels], rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), [l[:3] for l in labels], fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def plot_ring(coords: np.ndarray, labels, title: str, path: Path, extra=None) -> str:
    """Ring members joined in their cyclic order; ``extra`` = (coords, labels) drawn in grey."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    loop = np.vstack([coords, coords[:1]])
    ax.plot(loop[:, 0], loop[:, 1], "-", color="tab:blue", alpha=0.4)
    ax.scatter(coords[:, 0], coords[:, 1], color="tab:blue")
    for (x, y), t in zip(coords, labels):
        ax.annotate(t[:3], (x, y), fontsize=8)
    if extra is not None and len(extra[0]):
        ax.scatter(extra[0][:, 0], extra[0][:, 1], color="tab:gray", marker="x")
        for (x, y), t in zip(extra[0], extra[1]):
            ax.annotate(t, (x, y), fontsize=7, color="tab:gray")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", "datalim")
    return _save(fig, path)


def plot_lines(series: dict[str, tuple], xlabel: str, ylabel: str, path: Path, logy=False) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_hist(values: dict[str, np.ndarray], xlabel: str, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, v in values.items():
        ax.hist(v[np.isfinite(v)], bins=40, alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8)
    return _save(fig, path)
