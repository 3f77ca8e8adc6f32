"""Argument checks shared by every layer: values are refused, never silently rounded or coerced."""

from __future__ import annotations

import math

import torch

from bagofdims.errors import InvalidArgument, InvalidType


def as_indices(values, what: str) -> torch.Tensor:
    """int64 ``[n]`` from integer indices; floats and bools are refused, never truncated."""
    if isinstance(values, (str, bytes)):
        raise InvalidType(f"{what} must be integer indices, not the string {values!r}.")
    t = torch.as_tensor(values)
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise InvalidType(f"{what} must be integers, got {t.dtype} values (e.g. "
                          f"{t.reshape(-1)[:3].tolist()}); pass ints, they are never rounded.")
    return t.to(torch.int64).reshape(-1).cpu()


def positive_int(value, what: str) -> int:
    """``value`` as an int >= 1 (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{what} must be an integer >= 1, got {value!r}.")
    if value < 1:
        raise InvalidArgument(f"{what} must be >= 1, got {value}.")
    return value


def finite_number(value, what: str, minimum: float | None = None) -> float:
    """``value`` as a finite float (optionally >= ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{what} must be >= {minimum}, got {value}.")
    return float(value)
