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

from bagofdims.sites import Site, resolve
from bagofdims.errors import InvalidArgument, NotFound


def register_site_hook(module: nn.Module, on: str, hook):
    """Attach ``hook`` where a site is read: a pre-hook (with kwargs) for ``on="input"`` sites,
    a forward hook on the output otherwise. Returns the removable handle."""
    if on == "input":
        return module.register_forward_pre_hook(hook, with_kwargs=True)
    return module.register_forward_hook(hook)


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
    ):
        self.model = model
        self.sites: list[Site] = resolve(model, sites)
        self.stop = stop
        self.to = to
        self.dtype = dtype
        self.position = position
        self.keep_all = keep_all
        self._values: dict[str, torch.Tensor] = {}
        self._history: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._handles: list = []
        self._seen: set[str] = set()

    # -- context management ------------------------------------------------------------------
    def __enter__(self) -> "Capture":
        if self._handles:
            raise RuntimeError("This Capture is already active; use a new one to nest captures.")
        self._values.clear()
        self._history.clear()
        try:
            by_module: dict[tuple[str, str], list[Site]] = defaultdict(list)
            for site in self.sites:
                by_module[(site.module_path, site.on)].append(site)
            # Reset the per-pass bookkeeping when the earliest site's module starts, which works
            # whichever module the user calls (the LM, its base model, an encoder...).
            first = self.model.get_submodule(self.sites[0].module_path)
            self._handles.append(first.register_forward_pre_hook(self._reset))
            for (path, on), group in by_module.items():
                hook = self._make_hook(group, on == "input")
                self._handles.append(register_site_hook(self.model.get_submodule(path), on, hook))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def remove(self) -> None:
        """Detach every hook of this capture (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- hooks --------------------------------------------------------------------------------
    def _reset(self, module, args):
        self._seen.clear()

    _reset.__bagofdims__ = "capture:reset"

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

        hook.__bagofdims__ = "capture:" + ",".join(s.name for s in group)
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


def active_hooks(model: nn.Module) -> list[tuple[str, str]]:
    """``(module path, owner)`` of every bagofdims hook attached to ``model`` right now.

    Hooks that transformers itself installs (it keeps some for ``output_hidden_states``) are not
    listed: only ours, which must never outlive their context manager.
    """
    found = []
    for path, module in model.named_modules():
        for fn in (*module._forward_hooks.values(), *module._forward_pre_hooks.values()):
            owner = getattr(fn, "__bagofdims__", None)
            if owner is not None:
                found.append((path, owner))
    return found


def hook_count(model: nn.Module) -> int:
    """Number of bagofdims hooks attached to ``model`` (0 outside any context manager)."""
    return len(active_hooks(model))


def no_cache_kwargs(model: nn.Module) -> dict:
    """``{"use_cache": False}`` where the model's forward takes it (nothing is generated)."""
    import inspect

    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
