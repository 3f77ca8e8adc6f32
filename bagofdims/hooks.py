"""The one hook lifecycle: every forward hook bagofdims puts on a model goes through here.

A :class:`HookSet` is a context manager owning a group of hooks with one owner tag (``capture``,
``sign_flip``, ...). Its hooks are attached on enter and removed on exit, also when the block
raises, so none outlives its ``with``. While attached, each hook acts only for forward passes run
by the thread that entered the set: two threads capturing from one model each see their own
passes, never the other's. ``any_thread=True`` lifts that for a forward run on another thread on
purpose (``generate`` in a streaming thread); then no other thread may use the model meanwhile.

:func:`active_hooks` lists what is attached right now, captures and interventions alike.

Models compiled with ``torch.compile`` run a traced graph that does not call hooks attached
afterwards (a capture would stay empty, a flip would change nothing), so they are refused: hook
the uncompiled module (``compiled._orig_mod``, same weights) instead.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable

from torch import nn

from bagofdims.errors import HookError, InvalidArgument

WHERE = ("output", "input", "model_input")


@dataclass
class _Spec:
    path: str
    hook: Callable
    where: str
    label: str


# root model -> hook sets attached to it now (in attachment order)
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, list[HookSet]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def check_hookable(model: nn.Module) -> None:
    """Raise :class:`HookError` for models whose forward would ignore hooks (compiled ones)."""
    if not isinstance(model, nn.Module):
        raise HookError(f"Expected a torch nn.Module (a loaded HF model), got {type(model).__name__}.")
    if hasattr(model, "_orig_mod"):
        raise HookError(
            "This model was compiled with torch.compile, whose graph does not run hooks attached "
            "afterwards; pass the uncompiled module (model._orig_mod, the same weights) instead.")
    for path, module in model.named_modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            where = f"module '{path}'" if path else "the model"
            raise HookError(
                f"{where} was compiled in place (module.compile()), whose graph does not run hooks "
                "attached afterwards; use an uncompiled copy of the model.")


class HookSet:
    """Hooks of one owner on one model, attached for the duration of a ``with`` block.

    ``add(path, fn, where)``: ``where="output"`` is a forward hook ``fn(module, args, output)``;
    ``"input"`` a pre-hook with kwargs ``fn(module, args, kwargs)``; ``"model_input"`` the same on
    the root model (``path`` ignored). ``label`` is appended to the owner tag that
    :func:`active_hooks` shows (e.g. the sites a hook serves). A hook returning a value replaces the output / inputs, as
    in torch.
    """

    def __init__(self, model: nn.Module, owner: str, obj=None, any_thread: bool = False):
        self.model = model
        self.any_thread = any_thread
        self.owner = owner
        self.obj = obj  # the public object (Capture, SignFlip) these hooks belong to
        self._specs: list[_Spec] = []
        self._handles: list = []
        self._thread: int | None = None

    def add(self, path: str, fn: Callable, where: str = "output", label: str = "") -> None:
        if where not in WHERE:
            raise InvalidArgument(f"where='{where}': use one of {WHERE}.")
        if self._handles:
            raise HookError("Add hooks before the set is attached.")
        self._specs.append(_Spec(path, fn, where, label))

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _guarded(self, fn: Callable, label: str) -> Callable:
        def hook(*args):
            if not self.any_thread and threading.get_ident() != self._thread:
                return None  # another thread's forward pass: not ours to touch
            return fn(*args)

        hook.__bagofdims__ = f"{self.owner}:{label}" if label else self.owner
        hook.__bagofdims_set__ = self
        return hook

    def attach(self) -> "HookSet":
        if self._handles:
            raise HookError(f"This {self.owner} is already active; create another one to nest.")
        check_hookable(self.model)
        self._thread = threading.get_ident()
        try:
            for spec in self._specs:
                hook = self._guarded(spec.hook, spec.label)
                if spec.where == "model_input":
                    handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
                else:
                    module = self.model.get_submodule(spec.path)
                    if spec.where == "input":
                        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
                    else:
                        handle = module.register_forward_hook(hook)
                self._handles.append(handle)
        except BaseException:
            self.detach()
            raise
        with _LOCK:
            _ACTIVE.setdefault(self.model, []).append(self)
        return self

    def detach(self) -> None:
        """Remove every hook of this set (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        with _LOCK:
            sets = _ACTIVE.get(self.model)
            if sets and self in sets:
                sets.remove(self)
        self._thread = None

    def __enter__(self) -> "HookSet":
        return self.attach()

    def __exit__(self, *exc) -> bool:
        self.detach()
        return False


def active_hooks(model: nn.Module) -> list[tuple[str, str]]:
    """``(module path, owner)`` of every bagofdims hook attached to ``model`` right now.

    Read from the modules themselves, so a hook that escaped its set would still show up. Hooks
    that transformers installs are not listed: only ours, which never outlive their ``with``.
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


def active_objects(model: nn.Module, kind: type | None = None) -> list:
    """The public objects (captures, flips) whose hooks are attached to ``model``, in order."""
    with _LOCK:
        sets = list(_ACTIVE.get(model, []))
    objs = [s.obj for s in sets if s.obj is not None]
    return [o for o in objs if kind is None or isinstance(o, kind)]
