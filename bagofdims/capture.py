"""Capture hidden states with forward hooks on the real HF modules.

>>> with Capture(model, ["resid.*", "k.3"]) as cap:
...     model(**batch)
>>> cap["resid.5"]          # [batch, seq, d_model]

One hook per module, registered on enter and removed on exit (also when the block raises). With
``stop=True`` the forward pass is cut short once every requested site has been seen, which skips
the remaining layers (and the LM head); the :class:`StopForward` raised for that is swallowed by
the context manager, or use :meth:`Capture.run` which catches it for you.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from bagofdims.hooks import HookSet
from bagofdims.sites import Site, resolve
from bagofdims.errors import HookError, InvalidArgument, InvalidType, NotFound


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early (all requested sites captured)."""


class Capture:
    """Context manager recording the values of sites during forward passes.

    Args:
        model: a loaded HF model (never modified; only hooks are attached, and only inside
            the ``with`` block).
        sites: site names or globs (see :mod:`bagofdims.sites`).
        stop: end the forward pass once every site has been captured.
        to: move captured tensors to this device (e.g. ``"cpu"``); default: stay where computed.
        dtype: cast captured tensors (e.g. ``torch.float16``) to save memory.
        position: keep only this sequence position (e.g. ``-1``), before moving or casting.
        keep_all: keep every forward pass's value (a list per site, e.g. one per decode step)
            instead of only the latest.
        any_thread: also record passes run by other threads (default: only the thread that
            entered the block, so concurrent captures on one model stay apart).
    """

    def __init__(
        self,
        model: nn.Module,
        sites,
        stop: bool = False,
        to: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        position: int | None = None,
        keep_all: bool = False,
        any_thread: bool = False,
    ):
        self.model = model
        self.sites: list[Site] = resolve(model, sites)
        if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
            raise InvalidType(f"position={position!r}: pass an int sequence index (e.g. -1) or None.")
        self.stop = stop
        self.to = to
        self.dtype = _as_dtype(dtype)
        self.position = position
        self.keep_all = keep_all
        self.any_thread = any_thread
        self._values: dict[str, torch.Tensor] = {}
        self._history: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._hooks: HookSet | None = None
        self._seen: set[str] = set()

    # -- context management ------------------------------------------------------------------
    def __enter__(self) -> "Capture":
        if self.active:
            raise HookError("This Capture is already active; use a new one to nest captures.")
        self._values.clear()
        self._history.clear()
        hooks = HookSet(self.model, "capture", self, any_thread=self.any_thread)
        by_module: dict[tuple[str, str], list[Site]] = defaultdict(list)
        for site in self.sites:
            by_module[(site.module_path, site.on)].append(site)
        # Reset the per-pass bookkeeping when the earliest site's module starts, which works
        # whichever module the user calls (the LM, its base model, an encoder...).
        hooks.add(self.sites[0].module_path, self._reset, "input", "reset")
        for (path, on), group in by_module.items():
            hooks.add(path, self._make_hook(group, on == "input"), on, ",".join(s.name for s in group))
        self._hooks = hooks.attach()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def remove(self) -> None:
        """Detach every hook of this capture (idempotent)."""
        if self._hooks is not None:
            self._hooks.detach()
            self._hooks = None

    @property
    def active(self) -> bool:
        return self._hooks is not None and self._hooks.active

    # -- hooks --------------------------------------------------------------------------------
    def _reset(self, module, args, kwargs):
        self._seen.clear()

    def _make_hook(self, group: list[Site], is_input: bool):
        def hook(module, *hook_args):
            if is_input:
                args, kwargs = hook_args
                value = args[0] if args else kwargs.get("hidden_states")
            else:
                value = hook_args[1]
            for site in group:
                self._record(site, site.select(value))
            if self.stop and len(self._seen) == len(self.sites):
                raise StopForward()

        return hook

    def _record(self, site: Site, value: torch.Tensor) -> None:
        value = value.detach()
        if self.position is not None and value.dim() >= 3:
            value = value[:, self.position]
        if self.dtype is not None:
            value = value.to(self.dtype)
        if self.to is not None:
            value = value.to(self.to, non_blocking=True)
        self._values[site.name] = value
        if self.keep_all:
            self._history[site.name].append(value)
        self._seen.add(site.name)

    # -- access -------------------------------------------------------------------------------
    def run(self, *args, **kwargs):
        """Call the model, treating an early stop as success. Returns the output or ``None``."""
        try:
            return self.model(*args, **kwargs)
        except StopForward:
            return None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._values:
            known = [s.name for s in self.sites]
            if name not in known:
                raise NotFound(f"'{name}' was not requested; this capture has {known}.")
            raise NotFound(f"'{name}' has not been computed yet: run the model inside the block.")
        return self._values[name]

    def history(self, name: str) -> list[torch.Tensor]:
        """Every captured value of a site, one per forward pass (needs ``keep_all=True``)."""
        if not self.keep_all:
            raise InvalidArgument("history() needs Capture(..., keep_all=True).")
        return list(self._history[name])

    def keys(self):
        return self._values.keys()

    def items(self):
        return self._values.items()

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"Capture({[s.name for s in self.sites]}, {state}, stop={self.stop})"


def _as_dtype(dtype):
    """A torch dtype from a dtype or its name ("float16", "torch.bfloat16")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        found = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    raise InvalidArgument(f"dtype={dtype!r} is not a torch dtype; pass e.g. torch.float16 or 'float16'.")


def no_cache_kwargs(model: nn.Module) -> dict:
    """``{"use_cache": False}`` where the model's forward takes it (nothing is generated)."""
    import inspect

    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
