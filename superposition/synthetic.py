"""Synthetic correlated binary features and the linear-vs-ReLU tied-autoencoder sweep.

Features sit at points ``c_i`` of a manifold (circle, figure-8, sphere); a latent ``z`` is drawn
on the same manifold and feature i fires with probability ``p_max * exp(-|z - c_i|^2 / 2s^2)``,
so nearby features co-fire and the covariance inherits the manifold's shape. ``iid`` features
fire independently. ``pairs`` makes features 2k and 2k+1 mutually exclusive: each pair is active
with probability ``p_max`` and then exactly one of its two members fires (the setting in which
a tied ReLU model stores the two antipodally). All models of a sweep train together as one batched tensor.

Why ``p_max = 1`` by default: the covariance is the latent-driven part (circulant, mostly the
first Fourier mode) plus a flat floor from each feature's own Bernoulli variance. Lowering
``p_max`` thins firing independently of the latent, which raises the floor relative to the
structured part (at p_max 0.4 the top eigenvalues are 0.20 vs a floor of ~0.105; at 1.0 the
structure dominates). Strong AdamW decay keeps only the modes whose signal clears the decay, so
the Gram matches the covariance only when the structured modes stand out from the floor:
relu m 8, wd 6 gives 0.88 / 0.97 / 0.98 at p_max 0.4 / 0.7 / 1.0 (wd 1: 0.33 / 0.32 / 0.33).
Centring and normalising do not matter here: by the circle's symmetry all features have the same
mean and variance, so the off-diagonal covariance, correlation and second-moment matrices
correlate at > 0.9999 and the (offset-invariant) Pearson comparison is the same for all three.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .geometry import effective_rank, gram_cov_corr
from bagofdims.errors import InvalidArgument
from bagofdims.storage import atomic_file, remove_stale_temps


@dataclass
class SyntheticConfig:
    """Settings of ``bows synthetic``; ``latent`` is ``A..B`` or a comma list, ``weight_decay`` a comma list."""
    out: str = "runs/bows/synth"
    """Output directory: metrics.json, synthetic_gram.png and synthetic_corr.png."""
    structure: str = "circle"
    """Manifold the features sit on: circle, figure8, sphere, iid (each fires with p_max / 2), or
    pairs (features 2k, 2k+1 never fire together; a pair is active with probability p_max)."""
    features: int = 12
    """Number of binary features (the input width n)."""
    latent: str = "2..12"
    """Latent widths to sweep: A..B (both ends included) or a comma list of integers."""
    weight_decay: str = "1,6"
    """Comma list of decoupled weight decays to sweep (on W and b, scaled by the lr each step)."""
    models: str = "linear,relu"
    """Comma list of model kinds to sweep: linear, relu."""
    steps: int = 4000
    """Adam steps; all models of the sweep train together."""
    batch_size: int = 512
    """Fresh samples drawn per step."""
    lr: float = 1e-2
    """Peak learning rate, cosine-decayed to 0 over --steps."""
    p_max: float = 1.0
    """Probability that a feature fires when the latent point sits on it, in (0, 1]."""
    width: float = 0.8
    """Width s of a feature's firing bump p = p_max exp(-d^2 / 2s^2), d its distance to the latent
    point (unit circle and sphere)."""
    seed: int = 0
    """Seed of the initial weights and the samples."""


def parse_range(text: str) -> list[int]:
    """``"2..12"`` -> [2, ..., 12]; ``"2,4,8"`` -> [2, 4, 8]."""
    if ".." in text:
        a, b = text.split("..")
        return list(range(int(a), int(b) + 1))
    return [int(t) for t in text.split(",") if t]


def feature_points(structure: str, n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    if structure == "circle":
        return torch.stack([t.cos(), t.sin()], 1)
    if structure in ("figure8", "figure-8"):
        return torch.stack([t.sin(), t.sin() * t.cos()], 1) * 1.5
    if structure == "sphere":
        k = torch.arange(n, dtype=torch.float64) + 0.5
        phi, theta = torch.acos(1 - 2 * k / n), math.pi * (1 + 5 ** 0.5) * k
        return torch.stack([phi.sin() * theta.cos(), phi.sin() * theta.sin(), phi.cos()], 1)
    raise InvalidArgument(f"structure must be circle, figure8, sphere or iid, not {structure!r}")


def sample(cfg: SyntheticConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` binary samples [n, features] (float32)."""
    if cfg.structure == "pairs":
        if cfg.features % 2:
            raise InvalidArgument(f"structure pairs needs an even number of features, not {cfg.features}")
        active = torch.rand(n, cfg.features // 2, generator=gen, dtype=torch.float64) < cfg.p_max
        first = torch.rand(n, cfg.features // 2, generator=gen, dtype=torch.float64) < 0.5
        return torch.stack([active & first, active & ~first], 2).reshape(n, cfg.features).float()
    if cfg.structure == "iid":
        p = torch.full((n, cfg.features), cfg.p_max * 0.5, dtype=torch.float64)
    else:
        c = feature_points(cfg.structure, cfg.features)
        u = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
        if cfg.structure == "circle":
            z = torch.stack([u.cos(), u.sin()], 1)
        elif cfg.structure == "sphere":
            z = torch.randn(n, 3, generator=gen, dtype=torch.float64)
            z = z / z.norm(dim=1, keepdim=True)
        else:
            z = torch.stack([u.sin(), u.sin() * u.cos()], 1) * 1.5
        d2 = torch.cdist(z, c).square()
        p = cfg.p_max * torch.exp(-d2 / (2 * cfg.width ** 2))
    return (torch.rand(p.shape, generator=gen, dtype=torch.float64) < p).float()


def train_sweep(cfg: SyntheticConfig) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Train every (model, latent, wd) at once. Returns specs, weights [K, M, n] and covariance."""
    gen = torch.Generator().manual_seed(cfg.seed)
    specs = [{"model": k, "latent": m, "weight_decay": wd}
             for k in cfg.models.split(",") for wd in (float(w) for w in cfg.weight_decay.split(","))
             for m in parse_range(cfg.latent)]
    if not specs:
        raise InvalidArgument("empty sweep: check --latent, --weight-decay and --models")
    K, M, n = len(specs), max(s["latent"] for s in specs), cfg.features
    mask = torch.zeros(K, M, 1)
    for k, s in enumerate(specs):
        mask[k, : s["latent"]] = 1
    # ReLU as max(pre, 0); the linear models get max(pre, -inf) = pre (one batched op for all)
    floor = torch.tensor([0.0 if s["model"] == "relu" else -math.inf for s in specs]).view(K, 1, 1)
    wd = torch.tensor([s["weight_decay"] for s in specs]).view(K, 1, 1)
    W = ((torch.rand(K, M, n, generator=gen) * 2 - 1) * math.sqrt(2 / n) * mask).requires_grad_()
    b = torch.zeros(K, 1, n, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    for step in range(cfg.steps):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = sample(cfg, cfg.batch_size, gen)
        pre = (x @ W.transpose(1, 2)) @ W + b          # [K, batch, n]
        x_hat = torch.maximum(pre, floor)
        loss = (x_hat - x).square().mean(dim=(1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():  # decoupled decay on all parameters, per model
            W.mul_(1 - lr * wd)
            b.mul_(1 - lr * wd)
        opt.step()
        with torch.no_grad():
            W.mul_(mask)
    with torch.no_grad():
        x = sample(cfg, 20000, gen)
        pre = (x @ W.transpose(1, 2)) @ W + b
        x_hat = torch.maximum(pre, floor)
        losses = (x_hat - x).square().mean(dim=(1, 2))
        cov = torch.cov(x.T)
    for k, s in enumerate(specs):
        w = W[k, : s["latent"]].detach()
        s.update(loss=float(losses[k]), weight_norm_sq=float(w.square().sum()),
                 effective_rank=effective_rank(w), gram_cov_corr=gram_cov_corr(w, cov),
                 lr_x_wd_x_steps=cfg.lr * s["weight_decay"] * cfg.steps)
    return specs, W.detach(), cov


def run_synthetic(cfg: SyntheticConfig) -> dict:
    """Run the sweep and write ``metrics.json`` and plots into ``cfg.out``."""
    from .plots import plot_synthetic

    specs, W, cov = train_sweep(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # half-written files of a killed run
    result = {"config": asdict(cfg), "models": specs,
              "note": "gram_cov_corr: Pearson correlation of the off-diagonal Gram entries W^T W "
                      "with the off-diagonal data covariance (centred; by symmetry the same as with "
                      "the correlation matrix)"}
    with atomic_file(out / "metrics.json", "w") as f:
        f.write(json.dumps(result, indent=2))
    plot_synthetic(specs, W, cov, out)
    return result
