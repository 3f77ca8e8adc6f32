"""Input checks, label/mask handling, standardisation and class weights shared by the probes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from bagofdims.errors import InvalidArgument, InvalidType

Tensorish = "torch.Tensor | np.ndarray"


def as_features(X, device=None, dtype=torch.float32, name: str = "X") -> torch.Tensor:
    """Return X as a 2-D float tensor on `device` (default: X's own device), refusing NaN/inf."""
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor):
        raise InvalidType(
            f"{name} must be a torch.Tensor or numpy array of shape [n, d], got {type(X).__name__}"
        )
    if X.ndim != 2:
        raise InvalidArgument(
            f"{name} must be 2-D [n, d] (rows = tokens, columns = dims); got shape {tuple(X.shape)}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidArgument(f"{name} is empty (shape {tuple(X.shape)})")
    X = X.to(device=device if device is not None else X.device, dtype=dtype)
    if not torch.isfinite(X).all():
        bad = (~torch.isfinite(X)).any(1).nonzero().flatten()[:5].tolist()
        raise InvalidArgument(
            f"{name} contains NaN or inf (first bad rows: {bad}); clean or drop those rows first"
        )
    return X


def as_labels(y, n: int, device, name: str = "y") -> tuple[torch.Tensor, bool]:
    """Return labels as a bool [n, k] tensor and whether the input was 1-D."""
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    vector = y.ndim == 1
    if vector:
        y = y[:, None]
    if y.ndim != 2:
        raise InvalidArgument(
            f"{name} must be [n] or [n, k] (one column per category); got shape {tuple(y.shape)}"
        )
    if y.shape[0] != n:
        raise InvalidArgument(
            f"{name} has {y.shape[0]} rows but X has {n}; they must be the same rows"
        )
    if y.dtype != torch.bool:
        if y.is_floating_point() and not torch.isfinite(y).all():
            raise InvalidArgument(f"{name} contains NaN or inf; labels must be 0/1")
        if not ((y == 0) | (y == 1)).all():
            raise InvalidArgument(f"{name} must hold only 0/1 (or bool) labels")
        y = y == 1
    return y.to(device), vector


def as_mask(mask, shape: tuple[int, int], device) -> torch.Tensor | None:
    """Per-(row, column) inclusion mask: [n] broadcasts to all columns, [n, k] is per column."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=device)
    if mask.dtype != torch.bool:
        raise InvalidType("mask must be a bool tensor (True = row used for that column)")
    if mask.ndim == 1:
        mask = mask[:, None].expand(shape)
    if tuple(mask.shape) != tuple(shape):
        raise InvalidArgument(
            f"mask shape {tuple(mask.shape)} must be [n] or [n, k] = {tuple(shape)}"
        )
    return mask


def check_two_classes(
    y: torch.Tensor, mask: torch.Tensor | None, what: str = "training"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column positive/negative counts; error naming the columns that have only one class."""
    m = mask if mask is not None else torch.ones_like(y)
    n_pos = (y & m).sum(0)
    n_neg = (~y & m).sum(0)
    bad = ((n_pos == 0) | (n_neg == 0)).nonzero().flatten()
    if bad.numel():
        cols = bad[:10].tolist()
        raise InvalidArgument(
            f"{what} labels of column(s) {cols}{'...' if bad.numel() > 10 else ''} contain a single class "
            f"(positives={n_pos[bad[:10]].tolist()}, negatives={n_neg[bad[:10]].tolist()}); "
            "every category needs at least one positive and one negative row"
        )
    return n_pos, n_neg


def class_weights(
    y: torch.Tensor, mask: torch.Tensor | None, balanced: bool, dtype
) -> torch.Tensor:
    """Per-(row, column) loss weights summing to 1 per column.

    balanced: each class carries half of the column's loss (weight 1/(2 n_pos) or 1/(2 n_neg)),
    so ~50 positives are not drowned by a whole vocabulary of negatives. Otherwise 1/n per row.
    """
    n_pos, n_neg = check_two_classes(y, mask)
    if balanced:
        c = torch.where(y, 0.5 / n_pos.to(dtype), 0.5 / n_neg.to(dtype))
    else:
        c = (1.0 / (n_pos + n_neg).to(dtype)).expand(y.shape).clone()
    if mask is not None:
        c = c * mask
    return c


@dataclass
class Standardizer:
    """Per-dimension centring and scaling (population std, like sklearn's StandardScaler)."""

    mean: torch.Tensor  # [d]
    scale: torch.Tensor  # [d]; 1 where a dimension is constant

    @classmethod
    def fit(cls, X: torch.Tensor, enabled: bool = True) -> Standardizer:
        d = X.shape[1]
        if not enabled:
            return cls(
                torch.zeros(d, device=X.device, dtype=X.dtype),
                torch.ones(d, device=X.device, dtype=X.dtype),
            )
        # float64 moments: hidden states can have a few huge dims where float32 sums lose digits.
        X64 = X.double()
        mean = X64.mean(0)
        std = (X64 - mean).pow(2).mean(0).sqrt()
        std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
        return cls(mean.to(X.dtype), std.to(X.dtype))

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        if X.shape[1] != self.mean.shape[0]:
            raise InvalidArgument(
                f"X has {X.shape[1]} dims but the probe was fitted on {self.mean.shape[0]}"
            )
        return (X - self.mean.to(X.device)) / self.scale.to(X.device)
