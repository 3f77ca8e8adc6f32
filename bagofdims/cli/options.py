"""What several commands share: flag annotations, default directories, and up-front checks.

The checks raise :class:`~bagofdims.errors.InvalidArgument` with the flag's name, before any
model is loaded, so a typo costs nothing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import tyro

from bagofdims.errors import InvalidArgument

RUNS = Path("runs")


def flag(default: str | None = None, metavar: str | None = None, aliases: tuple[str, ...] = ()):
    """Help details of a field: a derived default (e.g. from --model) shown instead of "None",
    a placeholder, short aliases."""
    hint = None if default is None else f"(default: {default})"
    return tyro.conf.arg(help_behavior_hint=hint, metavar=metavar, aliases=aliases or None)


DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps"


def safe_name(model: str) -> str:
    """A directory name for a model: a local directory's own name, else the id with '/' -> '--'."""
    path = Path(model)
    name = path.resolve().name if path.is_dir() else model.strip("/").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "model"


def run_dir(model: str, kind: str) -> str:
    """``runs/<model>/<kind>``: where a command writes (or reads) by default."""
    return str(RUNS / safe_name(model) / kind)


def check_device(device: str | None) -> str | None:
    """The device to load on (None: CUDA if available, else CPU); refuses one this machine lacks."""
    import torch

    if device is None or device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InvalidArgument(f"--device {device!r} is not a device; use {DEVICE_HELP}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgument(f"--device {device}: CUDA is not available on this machine "
                                  "(torch.cuda.is_available() is False); use --device cpu.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise InvalidArgument(f"--device {device}: this machine has {n} CUDA device(s), "
                                  f"cuda:0..cuda:{n - 1}.")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidArgument(f"--device {device}: MPS is not available on this machine "
                                  "(torch.backends.mps.is_available() is False); use --device cpu.")
    elif dev.type != "cpu":
        raise InvalidArgument(f"--device {device!r}: use {DEVICE_HELP}.")
    return device


def check_positive(flag: str, value: int | float) -> None:
    """Refuse 0, negatives, NaN and infinity for a count or size flag."""
    if isinstance(value, float) and not math.isfinite(value) or not value > 0:
        raise InvalidArgument(f"{flag} must be a positive number, got {value}.")


def check_finite_nonnegative(flag: str, value: float) -> None:
    """Refuse NaN, infinity and negatives (e.g. a magnitude factor)."""
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{flag} must be a finite number >= 0, got {value}.")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a value outside ``choices`` (for the Python API; the CLI's parser already does)."""
    if value not in choices:
        raise InvalidArgument(f"{flag} must be one of {', '.join(choices)}, got {value!r}.")
