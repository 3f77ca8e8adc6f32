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


def _by(rows, key):
    out: dict = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def _seed_series(ax, rows, x_key, y_key, label, color, ls="-"):
    """Mean over seeds with a bar of ± 1 sd, and every seed as a faint dot."""
    groups = _by(rows, x_key)
    xs = sorted(groups)
    vals = [[r[y_key] for r in groups[x] if r.get(y_key) is not None] for x in xs]
    keep = [i for i, v in enumerate(vals) if v]
    if not keep:
        return
    xs, vals = [xs[i] for i in keep], [vals[i] for i in keep]
    mean = [float(np.mean(v)) for v in vals]
    sd = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
    ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=label, color=color, ls=ls)
    for x, v in zip(xs, vals):
        ax.scatter([x] * len(v), v, s=8, alpha=0.4, color=color)


def plot_sweep(rows: list[dict], summary: list[dict], out: Path) -> list[str]:
    """Interference vs m, effective rank vs decay, linear vs non-linear superposition vs m (each
    point a mean over seeds, bars ± 1 sd, dots the seeds)."""
    out = Path(out)
    names = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by_wd = _by(rows, "weight_decay")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (suffix, title) in zip(axes, (("interference", "‖off-diag W_Gᵀ W_G‖_F (paper)"),
                                          ("cos_interference", "‖off-diag cos(W_G)‖_F"))):
        for k, (wd, rs) in enumerate(sorted(by_wd.items())):
            for group, style in (("months", "-"), ("roman", "--")):
                _seed_series(ax, rs, "latent", f"{group}_{suffix}", f"{group}, wd {wd:g}", colors[k % len(colors)],
                             style)
        ax.set_xscale("log")
        ax.set_xlabel("latent m")
        ax.set_title(title, fontsize=9)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    names.append(_save(fig, out / "interference_vs_m.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, (m, rs) in enumerate(sorted(_by(rows, "latent").items())):
        rs = [{**r, "rank_frac": r["effective_rank"] / m} for r in rs]
        _seed_series(ax, rs, "lr_x_wd_x_steps", "rank_frac", f"m {m}", colors[k % len(colors)])
    ax.set_xlabel("decay budget lr·wd·steps")
    ax.set_ylabel("effective rank / m")
    ax.legend(fontsize=8)
    names.append(_save(fig, out / "effective_rank_vs_decay.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (wd, rs) in enumerate(sorted(by_wd.items())):
        _seed_series(axes[0], rs, "latent", "linearly_superposed", f"linear, wd {wd:g}", colors[k % len(colors)])
        _seed_series(axes[0], rs, "latent", "nonlinearly_superposed", f"non-linear, wd {wd:g}",
                     colors[k % len(colors)], "--")
        _seed_series(axes[1], rs, "latent", "months_linear_r2", f"wd {wd:g}", colors[k % len(colors)])
    axes[0].set_ylabel("words with held-out R² > threshold")
    axes[1].set_ylabel("months: mean linear read-out R²")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("latent m")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    names.append(_save(fig, out / "r2_vs_m.png"))
    return names
