"""E9, pairwise mutual information between the signs of hidden dims, per site: bias-corrected,
against a finite-sample null, against a properly built rotated control, at position level
(states on text) and at type level (the sign cache's vocabulary rows).

Estimators (bits; from :func:`bagofdims.stats.sign_mi_tables` and
:func:`bagofdims.stats.shuffled_sign_mi`; every mean is over all ``d (d - 1) / 2`` pairs, a pair
with a constant-sign dim counting as its exact 0):

- *plug-in*: the empirical 2x2 table's MI; biased up by about ``1 / (2 n ln 2)`` per pair of
  independent signs.
- *Miller-Madow* (``mm``): ``plug-in - (K_ab - K_a - K_b + 1) / (2 n ln 2)`` with ``K`` the
  non-empty cells / sign bins; the headline estimator.
- *shuffled baseline*: the same estimators after permuting each dim's rows independently
  (``repeats`` seeded shuffles): same per-dim sign rates, no dependence. ``excess`` is the data's
  mean minus the baseline's mean.
- *rotated control*: each dim centred on its mean and scaled to unit standard deviation, then
  multiplied by one Haar-random rotation (a constant dim stays 0). It has the data's covariance
  structure up to the basis, so it differs from the *centred* data (the same standardised
  states, not rotated; also reported) only in basis. Its signs are taken around each rotated
  dim's mean, the data's around 0, so the data-vs-control gap mixes basis and threshold; the
  centred row separates them.

Rules, fixed before any result (the same for every model and site):

- ``in_paper_range``: the Miller-Madow mean lies in the paper's [0.0004, 0.0051] bits.
- ``basis``: ``gap = mm mean (data) - mm mean (rotated control)``; ``threshold = 3 *
  sqrt(sd_data^2 + sd_rotated^2)`` with ``sd`` the standard deviation over shuffles of the
  shuffled baseline's Miller-Madow mean (the spread sampling alone gives a mean MI of that
  data). ``"lower than rotated"`` when ``gap < -threshold``, ``"higher than rotated"`` when
  ``gap > threshold``, else ``"indistinguishable"``; "basis special" is either of the first two.
  The shuffles treat positions as independent; positions of one text are not, so the
  threshold is a lower bound on the noise, and one rotation is one draw.
- ``pairs_over``: unordered pairs above the paper's 0.1 bits.
"""

from __future__ import annotations

import math

import torch

from bagofdims import stats
from bagofdims.errors import InvalidArgument

__all__ = ["PAIR_LIMIT", "PAPER_RANGE", "PAPER_TYPE_LEVEL", "SPREAD_Z", "estimates", "mi_by_site",
           "site_mi", "standardise", "type_level_mi"]

PAPER_RANGE = (0.0004, 0.0051)  # bits: the paper's mean pairwise sign MI over its models
PAPER_TYPE_LEVEL = 0.0014  # bits: the paper's type-level mean MI
PAIR_LIMIT = 0.1  # bits: the paper's "no pair above"
SPREAD_Z = 3.0  # the basis rule's threshold, in shuffle standard deviations of the gap
TOP = 5  # pairs listed per site


def _check(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidArgument(f"{name} must be a [n, d] tensor with n >= 2 rows and d >= 2 dims, "
                              f"got {shape}; collect more positions or pass a wider site.")
    x = x.to(torch.float32) if x.is_floating_point() else x
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InvalidArgument(f"{name} has NaN or inf values; collect the states in float32 or "
                              "drop those rows.")
    return x


def _summary(m: torch.Tensor) -> dict:
    vals = m[tuple(torch.triu_indices(m.shape[0], m.shape[1], offset=1, device=m.device))]
    return {"mean": float(vals.mean()), "max": float(vals.max()),
            "pairs_over": int((vals > PAIR_LIMIT).sum())}


def _top_pairs(t: stats.SignMI, k: int = TOP) -> list[dict]:
    i, j = torch.triu_indices(t.rate.shape[0], t.rate.shape[0], offset=1, device=t.rate.device)
    vals = t.miller_madow[i, j]
    best = vals.topk(min(k, vals.numel())).indices
    return [{"i": int(i[b]), "j": int(j[b]), "mm": float(vals[b]),
             "plugin": float(t.plugin[i[b], j[b]]), "rate_i": float(t.rate[i[b]]),
             "rate_j": float(t.rate[j[b]]), "both": float(t.both[i[b], j[b]])} for b in best]


def estimates(x: torch.Tensor, seed: int = 0, repeats: int = 8, top: bool = True) -> dict:
    """Plug-in and Miller-Madow mean / max / pairs over 0.1 of ``x [n, d]``, the shuffled
    baseline (``repeats`` shuffles; none when 0) with the excess over it, the number of
    constant-sign dims and (``top``) the 5 pairs of highest Miller-Madow MI with their sign
    rates (``rate_i``, ``rate_j``: share positive; ``both``: share where both are positive)."""
    x = _check(x, "states")
    t = stats.sign_mi_tables(x)
    out = {"n": int(x.shape[0]), "d": int(x.shape[1]),
           "constant_dims": int(((t.rate == 0) | (t.rate == 1)).sum()),
           "plugin": _summary(t.plugin), "mm": _summary(t.miller_madow)}
    if repeats:
        sh = stats.shuffled_sign_mi(x, seed=seed, repeats=repeats)
        out["shuffled"] = sh
        out["excess"] = {"plugin": out["plugin"]["mean"] - sh["plugin_mean"],
                         "mm": out["mm"]["mean"] - sh["mm_mean"]}
    if top:
        out["top_pairs"] = _top_pairs(t)
    return out


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each dim centred on its mean and scaled to unit standard deviation (a constant dim -> 0)."""
    x = _check(x, "states").to(torch.float64)
    sd = x.std(0, correction=0)
    return torch.where(sd > 0, (x - x.mean(0)) / torch.where(sd > 0, sd, 1.0), 0.0)


def _basis(data: dict, rotated: dict) -> dict:
    gap = data["mm"]["mean"] - rotated["mm"]["mean"]
    threshold = SPREAD_Z * math.hypot(data["shuffled"]["mm_mean_sd"],
                                      rotated["shuffled"]["mm_mean_sd"])
    verdict = ("lower than rotated" if gap < -threshold else
               "higher than rotated" if gap > threshold else "indistinguishable")
    return {"gap": gap, "threshold": threshold, "verdict": verdict,
            "special": verdict != "indistinguishable"}


def site_mi(x: torch.Tensor, seed: int = 0, repeats: int = 8) -> dict:
    """Every estimator on the states ``x [n, d]`` of one site, on the centred data and on the
    rotated control (rotation seed ``seed``), with the module's rules applied."""
    x = _check(x, "states")
    z = standardise(x)
    rot = (z @ stats.random_rotation(z.shape[1], seed, dtype=torch.float64)).to(torch.float32)
    out = estimates(x, seed=seed, repeats=repeats)
    out["centred"] = estimates(z.to(torch.float32), repeats=0, top=False)
    out["rotated"] = estimates(rot, seed=seed + 1, repeats=repeats, top=False)
    lo, hi = PAPER_RANGE
    out["in_paper_range"] = bool(lo <= out["mm"]["mean"] <= hi)
    out["basis"] = _basis(out, out["rotated"])
    return out


def mi_by_site(states_by_site: dict, seed: int = 0, repeats: int = 8) -> dict:
    """:func:`site_mi` for every site of ``{site: states [n, d]}`` (position level)."""
    if not states_by_site:
        raise InvalidArgument("mi_by_site needs at least one site's states; collect some with "
                              "experiments.reading_eval.collect_states.")
    return {site: site_mi(x, seed, repeats) for site, x in states_by_site.items()}


def type_level_mi(cache, sites, seed: int = 0, repeats: int = 4) -> dict:
    """Type level: the estimators (no rotated control: the cache keeps only signs, and a
    rotation of signs is not a rotation of states) over the cache's vocabulary rows, +1 counted
    as positive, per site. With ``n`` = the cached tokens the plug-in bias is tiny. Raises
    naming a site the cache lacks."""
    sites = list(sites)
    if not sites:
        raise InvalidArgument("type_level_mi needs at least one site.")
    missing = [s for s in sites if s not in cache.sites]
    if missing:
        raise InvalidArgument(f"sites {missing} are not in the cache (it has {cache.sites}); pass "
                              "only cached sites, or rebuild the cache with them.")
    return {s: estimates(cache.signs(s), seed=seed, repeats=repeats) for s in sites}
