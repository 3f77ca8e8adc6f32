"""Exact rank AUC with row masks, vectorised over columns (shared with bagofdims.stats)."""

from __future__ import annotations

import torch

from bagofdims.stats import masked_auc
from bagofdims.errors import InvalidArgument


def rank_auc(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """AUC of each column of `scores` [n, k] for bool `labels` [n, k], over rows where `mask` is True.

    Returns float64 [k] (a 0-d tensor for 1-D inputs); NaN for a column with no positive or no
    negative row.
    """
    if scores.ndim == 1:
        return rank_auc(scores[:, None], labels.reshape(-1, 1),
                        None if mask is None else mask.reshape(-1, 1))[0]
    if scores.shape != labels.shape:
        raise InvalidArgument(
            f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must have the same shape"
        )
    if not torch.isfinite(scores).all():
        raise InvalidArgument("scores contain NaN or inf; AUC is undefined")
    labels = labels.to(device=scores.device, dtype=torch.bool)
    if mask is None:
        mask = torch.ones_like(labels)
    mask = mask.to(device=scores.device, dtype=torch.bool).expand_as(labels)
    return masked_auc(scores, labels, mask)
