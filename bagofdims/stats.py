"""Statistics for sign features: rank AUC, top-k agreement, mutual information between signs.

All functions take batched tensors and avoid Python loops over rows or dimensions. Bad input
(NaN scores, labels that are not 0/1, mismatched shapes, empty inputs) raises an error saying
what to pass; nothing is cached, so every function is safe to call from many threads.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from bagofdims.errors import InvalidArgument, InvalidType

__all__ = [
    "auc",
    "binary_auc",
    "topk_agreement",
    "topk_agreement_at",
    "SignMI",
    "sign_mutual_information",
    "sign_mi_tables",
    "shuffled_sign_mi",
    "random_rotation",
    "mi_summary",
    "sign_collapse",
]


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise InvalidType(f"{name} must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor.")
    if x.is_complex():
        raise InvalidType(f"{name} is complex; pass real values.")
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise InvalidArgument(f"{name} contains NaN; drop or replace those rows (torch.nan_to_num).")


def _check_all_finite(x: torch.Tensor, name: str) -> None:
    """NaN and also ±inf refused: an infinite state is an overflow, not a sign to count."""
    _check_finite(x, name)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InvalidArgument(f"{name} contains ±inf; fix the overflow upstream (e.g. compute "
                              "in float32) or drop those rows.")


def _as_bool(x, name: str) -> torch.Tensor:
    """Bool tensor from bool or 0/1 values; anything else (0.7, 2, NaN) is refused, not cast."""
    x = torch.as_tensor(x)
    if x.dtype != torch.bool:
        if x.is_complex() or not bool(((x == 0) | (x == 1)).all()):
            odd = x[(x != 0) & (x != 1)].reshape(-1)[:3].tolist()
            raise InvalidArgument(f"{name} must be bool or 0/1, got other values (e.g. {odd}); "
                                  "threshold them first.")
        x = x.to(torch.bool)
    return x


def _whole(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidType(f"{name} must be an int, got {k!r} ({type(k).__name__}).")
    return int(k)


def auc(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
        ) -> float | torch.Tensor:
    """Exact Mann-Whitney ROC AUC, ties counted half (average ranks).

    ``scores`` is ``[n]`` (returns a float) or ``[n, k]`` (returns ``float64 [k]``, one AUC per
    column). ``labels`` is bool ``[n]`` (shared by all columns) or ``[n, k]``. Raises if shared
    labels lack a class; a column of ``[n, k]`` labels that lacks a class gets NaN. ``mask``
    (bool, broadcastable to ``[n, k]``) restricts each column to some rows, e.g. to leave a
    category's anchors out of its negatives.
    """
    _check_finite(scores, "scores")
    if scores.dim() not in (1, 2):
        raise InvalidArgument(f"scores must be [n] or [n, k], got shape {tuple(scores.shape)}.")
    y = _as_bool(labels, "labels")
    n, k = scores.shape[0], (scores.shape[1] if scores.dim() == 2 else 1)
    if y.dim() not in (1, 2) or y.shape[0] != n or (y.dim() == 2 and y.shape[1] != k):
        raise InvalidArgument(f"labels of shape {tuple(y.shape)} do not match scores "
                              f"{tuple(scores.shape)}; pass [n] or [n, k] labels.")
    if mask is not None:
        m = _as_bool(mask, "mask")
        if m.dim() not in (1, 2) or m.shape[0] != n or (m.dim() == 2 and m.shape[1] not in (1, k)):
            raise InvalidArgument(f"mask of shape {tuple(m.shape)} does not match scores "
                                  f"{tuple(scores.shape)}; pass [n] or [n, k].")
        s2 = scores.reshape(n, -1)
        out = masked_auc(s2, y.reshape(n, -1).expand_as(s2), m.reshape(n, -1).expand_as(s2))
        return float(out[0]) if scores.dim() == 1 else out
    single = scores.dim() == 1
    s = scores.reshape(n, -1).to(torch.float64)
    if y.dim() == 1:
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == n:
            raise InvalidArgument("auc needs both positive and negative labels; add the missing class.")
        y = y.unsqueeze(1).expand(n, k)
    sorted_s, order = s.sort(dim=0)
    pos = torch.arange(1, n + 1, dtype=torch.float64, device=s.device).unsqueeze(1).expand(n, k)
    new_run = torch.ones_like(sorted_s, dtype=torch.bool)
    new_run[1:] = sorted_s[1:] != sorted_s[:-1]
    end_run = torch.ones_like(new_run)
    end_run[:-1] = new_run[1:]
    first = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(0).values
    last = torch.where(end_run, pos, torch.full_like(pos, n + 1)).flip(0).cummin(0).values.flip(0)
    ranks = (first + last) * 0.5  # average rank of each tie run
    y_sorted = y.gather(0, order).to(torch.float64)
    n_pos = y_sorted.sum(0)
    n_neg = n - n_pos
    r_pos = (ranks * y_sorted).sum(0)
    out = (r_pos - n_pos * (n_pos + 1) * 0.5) / (n_pos * n_neg)
    out = torch.where((n_pos > 0) & (n_neg > 0), out, torch.full_like(out, float("nan")))
    return float(out[0]) if single else out


def masked_auc(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AUC per column of ``scores [n, k]`` over the rows where ``mask [n, k]`` is True.

    Each positive gets credit for the negatives strictly below it plus half the tied ones,
    counted by binary search in the column's sorted negatives. NaN where a class is empty.
    """
    _check_finite(scores, "scores")
    if scores.dim() != 2 or labels.shape != scores.shape or mask.shape != scores.shape:
        raise InvalidArgument(f"masked_auc needs scores, labels and mask of one [n, k] shape, got "
                              f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(mask.shape)}.")
    labels, mask = _as_bool(labels, "labels"), _as_bool(mask, "mask")
    s = scores.to(torch.float64).T.contiguous()  # [k, n]
    pos = (labels & mask).T
    neg = (~labels & mask).T
    neg_sorted = torch.where(neg, s, torch.full_like(s, float("inf"))).sort(dim=1).values.contiguous()
    # only the positives are searched: each column's positive scores, left-aligned in a padded
    # [k, most positives] block (positives are usually a few rows of many)
    n_pos_i = pos.sum(1)
    col, row = pos.nonzero(as_tuple=True)  # ordered by column
    start = torch.cumsum(n_pos_i, 0) - n_pos_i
    slot = torch.arange(len(col), device=s.device) - start[col]
    width = int(n_pos_i.max()) if len(col) else 0
    vals = torch.full((s.shape[0], width), float("inf"), dtype=s.dtype, device=s.device)
    vals[col, slot] = s[col, row]
    valid = torch.arange(width, device=s.device) < n_pos_i[:, None]
    below = torch.searchsorted(neg_sorted, vals, right=False)
    at_or_below = torch.searchsorted(neg_sorted, vals, right=True)
    credit = (below + at_or_below).to(torch.float64) * 0.5
    n_pos = n_pos_i.to(torch.float64)
    n_neg = neg.sum(1).to(torch.float64)
    out = (credit * valid).sum(1) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), out, torch.full_like(out, float("nan")))


def binary_auc(pos_rate: torch.Tensor, neg_rate: torch.Tensor) -> torch.Tensor:
    """AUC of a 0/1 score from the rate of 1s among positives and negatives (elementwise).

    ``0.5 + 0.5 * (pos_rate - neg_rate)``: the per-dimension sign AUC (score = sign > 0).
    """
    pos_rate = torch.as_tensor(pos_rate, dtype=torch.float64)
    neg_rate = torch.as_tensor(neg_rate, dtype=torch.float64)
    for name, r in (("pos_rate", pos_rate), ("neg_rate", neg_rate)):
        if not bool(((r >= 0) & (r <= 1)).all()):  # also refuses NaN
            raise InvalidArgument(f"{name} must be rates in [0, 1] (no NaN); got "
                                  f"{r[~((r >= 0) & (r <= 1))].reshape(-1)[:3].tolist()}.")
    return 0.5 + 0.5 * (pos_rate - neg_rate)


def topk_agreement(pred_topk_indices: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose ``target`` appears in that row's ``[n, k]`` predicted indices."""
    if pred_topk_indices.dim() != 2 or target.shape != pred_topk_indices.shape[:1]:
        raise InvalidArgument("expected pred [n, k] and target [n] with the same n.")
    if target.numel() == 0:
        raise InvalidArgument("topk_agreement of zero rows is undefined; pass at least one row.")
    hit = (pred_topk_indices == target.unsqueeze(1)).any(1)
    return float(hit.to(torch.float64).mean())


def topk_agreement_at(
    pred_topk_indices: torch.Tensor, target: torch.Tensor, ks: Iterable[int]
) -> dict[int, float]:
    """:func:`topk_agreement` for several k at once; predictions must be sorted best first."""
    if pred_topk_indices.dim() != 2 or target.shape != pred_topk_indices.shape[:1]:
        raise InvalidArgument("expected pred [n, K] and target [n] with the same n.")
    if target.numel() == 0:
        raise InvalidArgument("topk_agreement of zero rows is undefined; pass at least one row.")
    big_k = pred_topk_indices.shape[1]
    hits = pred_topk_indices == target.unsqueeze(1)
    # rank of the first hit per row (big_k if none): one pass serves every k
    first = torch.where(hits.any(1), hits.to(torch.int8).argmax(1), torch.full_like(target, big_k))
    out = {}
    for k in ks:
        k = _whole(k, "each k")
        if not 1 <= k <= big_k:
            raise InvalidArgument(f"k={k} must be in [1, {big_k}]; compute more predictions per row.")
        out[k] = float((first < k).to(torch.float64).mean())
    return out


@dataclass(frozen=True)
class SignMI:
    """Pairwise sign statistics of ``[n, d]`` states, all from one count matrix.

    ``rate [d]``: each dim's share of positive rows; ``both [d, d]``: share of rows where both
    dims are positive; ``plugin`` and ``miller_madow`` ``[d, d]``: MI in bits (diagonal: each
    sign's entropy under the same estimator).
    """

    n: int
    rate: torch.Tensor
    both: torch.Tensor
    plugin: torch.Tensor
    miller_madow: torch.Tensor


def _sign_counts(x: torch.Tensor, block_rows: int, need_rows: int = 1
                 ) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, n11 [d, d], n1 [d])``: rows where both / each dim is positive, as float64 counts.

    One product ``S^T S`` with ``S = (x > 0)``, summed in blocks of rows so the fp32 counts stay
    exact (below 2**24).
    """
    _check_finite(x, "x")
    if x.dim() != 2 or x.shape[0] < max(need_rows, 1):
        raise InvalidArgument(f"expected non-empty [n, d] states with n >= {max(need_rows, 1)} "
                              f"rows, got shape {tuple(x.shape)}.")
    if _whole(block_rows, "block_rows") < 1:
        raise InvalidArgument(f"block_rows must be >= 1, got {block_rows}.")
    n, d = x.shape
    n11 = torch.zeros((d, d), dtype=torch.float64, device=x.device)
    n1 = torch.zeros(d, dtype=torch.float64, device=x.device)
    for i in range(0, n, block_rows):
        s = (x[i : i + block_rows] > 0).to(torch.float32)
        n11 += (s.T @ s).to(torch.float64)
        n1 += s.sum(0, dtype=torch.float64)
    return n, n11, n1


def _sign_mi(x: torch.Tensor, block_rows: int, need_rows: int = 1) -> SignMI:
    n, n11, n1 = _sign_counts(x, block_rows, need_rows)
    # Cells from integer counts, divided last: differences of rounded probabilities could leave
    # a tiny positive cell next to a zero marginal (a constant-sign dim) and give inf.
    cells = (n11, n1.unsqueeze(1) - n11, n1.unsqueeze(0) - n11,
             n - n1.unsqueeze(1) - n1.unsqueeze(0) + n11)
    p1 = n1 / n
    p0 = (n - n1) / n
    margins = ((p1, p1), (p1, p0), (p0, p1), (p0, p0))
    mi = torch.zeros_like(n11)
    occupied = torch.zeros_like(n11)  # K_ab: non-empty cells of each pair's 2x2 table
    for cell, (pa, pb) in zip(cells, margins):
        pab = (cell / n).clamp(min=0.0)  # rounding can leave -1e-17 where a cell is empty
        ratio = pab / (pa.unsqueeze(1) * pb.unsqueeze(0))
        mi += torch.where(pab > 0, pab * torch.log2(torch.where(pab > 0, ratio, 1.0)), 0.0)
        occupied += (cell > 0.5).to(torch.float64)  # counts are whole numbers
    bins = (n1 > 0).to(torch.float64) + (n1 < n).to(torch.float64)  # K_a: non-empty sign bins
    plugin = mi.clamp_(min=0.0)
    # Miller-Madow: each entropy gains (K - 1) / (2n) nats, so MI = H_a + H_b - H_ab gains
    # -(K_ab - K_a - K_b + 1) / (2n). Not clamped: clamping would put the bias back.
    extra = (occupied - bins.unsqueeze(1) - bins.unsqueeze(0) + 1) / (2 * n * math.log(2))
    return SignMI(n=n, rate=p1, both=n11 / n, plugin=plugin, miller_madow=plugin - extra)


def sign_mutual_information(x: torch.Tensor, block_rows: int = 1 << 22) -> torch.Tensor:
    """Plug-in mutual information (bits) between the signs ``x > 0`` of all pairs of dims.

    Returns ``float64 [d, d]``; the diagonal is each sign's entropy. The 2x2 tables of all pairs
    come from one product ``S^T S`` with ``S = (x > 0)``; 0 log 0 = 0. Rows are summed in blocks
    so fp32 counts stay exact (below 2**24).
    """
    return _sign_mi(x, block_rows).plugin


def sign_mi_tables(x: torch.Tensor, block_rows: int = 1 << 22) -> SignMI:
    """Plug-in and Miller-Madow sign MI of all pairs (and the sign rates) from one count.

    Miller-Madow in bits: ``MI_MM = MI_plugin - (K_ab - K_a - K_b + 1) / (2 n ln 2)``, with
    ``K_ab`` the non-empty cells of the pair's 2x2 table and ``K_a``, ``K_b`` the non-empty sign
    bins of each dim. For two dims that both take both signs with all four cells filled this
    removes the plug-in bias ``1 / (2 n ln 2)`` of independent signs; a pair with a
    constant-sign dim gets exactly 0. Needs at least 2 rows of finite values; values may be
    slightly negative.
    """
    _check_all_finite(x, "x")
    return _sign_mi(x, block_rows, need_rows=2)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """Values of ``m [d, d]`` above the diagonal (each unordered pair once)."""
    i, j = torch.triu_indices(m.shape[0], m.shape[1], offset=1, device=m.device)
    return m[i, j]


def shuffled_sign_mi(x: torch.Tensor, seed: int = 0, repeats: int = 8,
                     block_rows: int = 1 << 22) -> dict[str, float]:
    """Finite-sample null of pairwise sign MI: the same data with each column's rows permuted
    independently (seeded), so every dim keeps its sign rate and all dependence is destroyed.

    Over ``repeats`` shuffles: ``plugin_mean`` / ``mm_mean`` (mean over shuffles of the mean
    off-diagonal MI; the plug-in one is its bias, the Miller-Madow one should be near 0),
    ``plugin_max`` / ``mm_max`` (the largest pair seen in any shuffle), ``plugin_mean_sd`` /
    ``mm_mean_sd`` (standard deviation over shuffles of the mean: the spread of a mean MI that
    sampling alone gives) and ``repeats``.
    """
    _check_all_finite(x, "x")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise InvalidArgument(f"shuffled_sign_mi needs states [n >= 2, d >= 2], got shape "
                              f"{tuple(x.shape)}.")
    if _whole(repeats, "repeats") < 2:
        raise InvalidArgument(f"repeats must be >= 2 (the spread needs two shuffles), got "
                              f"{repeats}.")
    rng = np.random.default_rng(_whole(seed, "seed"))
    signs = (x > 0).cpu().numpy()
    means, maxes = [], []
    for _ in range(repeats):  # a handful of shuffles; each is one batched count
        t = _sign_mi(torch.from_numpy(rng.permuted(signs, axis=0)).to(x.device), block_rows)
        vals = torch.stack([_off_diagonal(t.plugin), _off_diagonal(t.miller_madow)])
        means.append(vals.mean(1))
        maxes.append(vals.max(1).values)
    mean, top = torch.stack(means), torch.stack(maxes).max(0).values
    sd = mean.std(0)
    mean = mean.mean(0)
    return {"plugin_mean": float(mean[0]), "plugin_max": float(top[0]),
            "plugin_mean_sd": float(sd[0]), "mm_mean": float(mean[1]), "mm_max": float(top[1]),
            "mm_mean_sd": float(sd[1]), "repeats": int(repeats)}


def sign_collapse(signs: torch.Tensor, constant: float = 0.95) -> dict[str, float]:
    """How little a site tells tokens apart: over ±1 ``signs [n, d]`` (n >= 2 rows), the mean
    fraction of signs two different rows share (0.5 for independent fair signs, 1 when every
    row is the same pattern) and the fraction of dims whose sign is the same in at least
    ``constant`` of the rows."""
    _check_finite(signs, "signs")
    if signs.dim() != 2 or signs.shape[0] < 2 or signs.shape[1] == 0:
        raise InvalidArgument(f"sign_collapse needs ±1 signs [n, d] with at least 2 rows and 1 "
                              f"dim, got shape {tuple(signs.shape)}.")
    if not 0.5 < constant <= 1:
        raise InvalidArgument(f"constant must be in (0.5, 1], got {constant}.")
    pm = signs.float()
    if not bool(((pm == 1) | (pm == -1)).all()):
        raise InvalidArgument("signs must be ±1 (e.g. cache.signs(site)); for raw states pass "
                              "torch.where(x > 0, 1, -1).")
    n, d = pm.shape
    total = pm.sum(0)
    # sum over pairs i != j of <s_i, s_j> = |sum s|^2 - n * d, without the n x n matrix
    mean_dot = (total.square().sum() - n * d) / (n * (n - 1))
    share = (pm > 0).float().mean(0)
    return {"pair_agreement": float((mean_dot / d + 1) / 2),
            "constant_dims": float(((share - 0.5).abs() >= constant - 0.5).float().mean())}


def random_rotation(
    d: int, seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Haar-random ``[d, d]`` orthogonal matrix (QR of a Gaussian, signs of diag(R) fixed)."""
    if _whole(d, "d") < 1:
        raise InvalidArgument(f"d must be >= 1, got {d}.")
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(d, dtype=torch.float64))
    return q.to(dtype=dtype, device=device)


def mi_summary(x: torch.Tensor, rotate_control: bool = True, seed: int = 0) -> dict[str, float]:
    """Mean and max off-diagonal sign MI of ``x`` and, as the control, of ``x @ R``.

    ``R`` is a Haar-random rotation: a rotated Gaussian code also has near-zero pairwise sign
    MI, so near-zero MI alone does not show that the basis is special. Keys: ``mean_mi``,
    ``max_mi``, and with the control ``mean_mi_rotated``, ``max_mi_rotated``.
    """
    _check_finite(x, "x")
    if x.dim() != 2 or x.shape[1] < 2:
        raise InvalidArgument(f"mi_summary needs states [n, d >= 2], got shape {tuple(x.shape)}.")
    d = x.shape[1]

    def summarise(m: torch.Tensor) -> tuple[float, float]:
        vals = _off_diagonal(m)
        return float(vals.mean()), float(vals.max())

    out: dict[str, float] = {}
    out["mean_mi"], out["max_mi"] = summarise(sign_mutual_information(x))
    if rotate_control:
        r = random_rotation(d, seed, dtype=torch.float32, device=x.device)
        rot = x.to(torch.float32) @ r
        out["mean_mi_rotated"], out["max_mi_rotated"] = summarise(sign_mutual_information(rot))
    return out
