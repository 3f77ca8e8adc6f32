"""How strong a flip effect is against chance: permutation p-values and specificity.

- :func:`permutation_p`: an effect against control effects (lower = stronger, as a flip that
  suppresses a concept lowers its mass): ``(1 + #{controls <= effect}) / (1 + n)``, never 0.
- :func:`specificity_stats`: from a ``[C, C]`` matrix (row ``i``: concept ``i``'s feature
  flipped; column ``j``: concept ``j``'s change), the share of concepts whose own flip lowers
  them more than any other flip does, its chance level ``1 / C`` (when flips are exchangeable
  each of the ``C`` rows is equally likely to be a column's minimum), a Wilson interval and the
  binomial tail probability of doing at least as well by chance; and the margin (own change
  minus the median of the other flips' changes, per concept) with a bootstrap interval over
  concepts.
"""

from __future__ import annotations

import math

import torch

from bagofdims.errors import InvalidArgument

__all__ = ["binomial_tail", "permutation_p", "specificity_stats", "wilson_interval"]


def permutation_p(effect, controls) -> torch.Tensor:
    """One-sided p-value of each effect against control effects (lower = stronger).

    ``effect``: a number or ``[m]``; ``controls``: ``[n]`` (shared) or ``[m, n]``. Returns
    ``(1 + #{controls <= effect}) / (1 + n)`` (``float64``), in ``[1 / (n + 1), 1]``.
    """
    eff = torch.as_tensor(effect, dtype=torch.float64)
    ctl = torch.as_tensor(controls, dtype=torch.float64)
    if ctl.shape[-1] == 0:
        raise InvalidArgument("permutation_p needs at least one control effect.")
    if torch.isnan(eff).any() or torch.isnan(ctl).any():
        raise InvalidArgument("permutation_p got NaN effects; check the masses it came from.")
    return (1 + (ctl <= eff[..., None]).sum(-1)).double() / (1 + ctl.shape[-1])


def _z(level: float) -> float:
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((1 + level) / 2)))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n <= 0:
        return float("nan"), float("nan")
    z, p = _z(level), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``."""
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def specificity_stats(delta, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Own-flip specificity of a ``[C, C]`` change matrix (rows flipped, columns measured).

    Returns ``own_best`` (count of columns whose minimum is on the diagonal), ``rate``,
    ``chance`` (``1 / C``), ``rate_lo`` / ``rate_hi`` (Wilson), ``p_chance`` (binomial tail),
    ``margin`` (median over concepts of own change minus the median other change; negative:
    the own flip hits harder) with ``margin_lo`` / ``margin_hi`` (bootstrap over concepts), and
    ``margins`` per concept.
    """
    d = torch.as_tensor(delta, dtype=torch.float64)
    if d.dim() != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 2:
        raise InvalidArgument(f"specificity needs a square [C, C] matrix with C >= 2, got "
                              f"{tuple(d.shape)}.")
    if torch.isnan(d).any():
        raise InvalidArgument("the specificity matrix has NaN entries; check the masses.")
    c = d.shape[0]
    own = d.diagonal()
    off = ~torch.eye(c, dtype=torch.bool)
    others = d.T[off.T].reshape(c, c - 1)  # column j's changes under the other flips
    best = int((d.argmin(0) == torch.arange(c)).sum())
    margins = own - others.median(1).values
    g = torch.Generator().manual_seed(seed)
    boots = margins[torch.randint(0, c, (n_boot, c), generator=g)].median(1).values
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = wilson_interval(best, c, level)
    m_lo, m_hi = torch.quantile(boots, q).tolist()
    return {"own_best": best, "n": c, "rate": best / c, "chance": 1 / c, "rate_lo": lo,
            "rate_hi": hi, "p_chance": binomial_tail(best, c, 1 / c),
            "margin": float(margins.median()), "margin_lo": m_lo, "margin_hi": m_hi,
            "margins": margins.tolist(), "level": level}
