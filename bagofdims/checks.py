"""Argument checks shared by every layer: values are refused, never silently rounded or coerced."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

from bagofdims.errors import InvalidArgument, InvalidType


def as_indices(values, what: str, flat: bool = True) -> torch.Tensor:
    """int64 indices (``[n]`` with ``flat``, else the input's shape, on its device).

    Floats (even 3.0), bools and strings are refused, never truncated: a float id is almost
    always a bug upstream (an average, a score passed by mistake).
    """
    if isinstance(values, (str, bytes)):
        raise InvalidType(f"{what} must be integer indices, not the string {values!r}.")
    if isinstance(values, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(values)
        if t.numel() and (t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
            raise InvalidType(f"{what} must be integers, got {t.dtype} values (e.g. "
                              f"{t.reshape(-1)[:3].tolist()}); pass ints, they are never rounded.")
        t = t.to(torch.int64)
    else:
        out = []
        for v in values:
            try:
                if isinstance(v, (bool, np.bool_)) or (isinstance(v, torch.Tensor) and not (
                        v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool)):
                    raise TypeError
                out.append(operator.index(v))
            except TypeError:
                raise InvalidType(f"{what} must be integers, got {v!r} ({type(v).__name__}); "
                                  "pass whole numbers, they are never rounded.") from None
        t = torch.tensor(out, dtype=torch.int64)
    return t.reshape(-1).cpu() if flat else t


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
