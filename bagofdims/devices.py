"""Where a model's weights and inputs live: device arguments, accelerate device maps with CPU/disk
offload, and the real values of weights that accelerate keeps off their modules.

A model loaded with ``device_map`` carries accelerate's ``AlignDevicesHook`` on its modules: each
hook moves the module's inputs to its execution device and, for offloaded modules, loads the
weights in before the forward and puts them back on the ``meta`` device after it. So a parameter
of such a model may say ``meta`` although the model computes on CPU or a GPU: where inputs go is
asked of the hooks (:func:`input_device`, :func:`execution_device`), and the values of offloaded
weights are read from accelerate's offload store (:func:`offloaded_tensors`, :func:`real_tensor`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from bagofdims.storage import home
from bagofdims.errors import InvalidArgument, InvalidType

__all__ = ["adopt_offload_folder", "execution_device", "input_device", "is_offloaded", "offload_kwargs",
           "offloaded_tensors", "parse_device", "real_tensor"]

# device_map strings that accelerate plans itself (anything else names one device)
PLANS = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_device(device) -> torch.device:
    """The device to load on, refusing one this machine lacks before anything is read."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidArgument(
            f"device {device!r} is not a torch device: pass 'cpu', 'cuda', 'cuda:N' or None."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgument(
                f"device {device!r}: CUDA is not available here (torch "
                f"{torch.__version__}, torch.cuda.is_available() is False); pass device='cpu' "
                "or device=None, or install a CUDA build of torch on a machine with a GPU."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgument(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s); pass "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgument(f"device {device!r}: MPS is not available here; pass device='cpu'.")
    return dev


# ---- loading with a device map -----------------------------------------------------------------

def _check_max_memory(max_memory) -> None:
    from accelerate.utils import convert_file_size_to_int

    if not isinstance(max_memory, dict) or not max_memory:
        raise InvalidType(f"max_memory={max_memory!r}: pass a dict of device -> size, e.g. "
                          "{0: '20GiB', 'cpu': '60GiB'} (GPU index, 'cpu', 'mps' or 'disk').")
    for dev, size in max_memory.items():
        ok = isinstance(size, int) and not isinstance(size, bool) and size >= 0
        if isinstance(size, str):
            try:
                ok = convert_file_size_to_int(size) >= 0
            except ValueError:
                ok = False
        if not ok:
            raise InvalidArgument(f"max_memory[{dev!r}]={size!r} is not a size: pass bytes (int) "
                                  "or a string such as '500MB' or '20GiB'.")


def offload_kwargs(name: str, device, device_map, max_memory, offload_folder) -> tuple[dict, Path | None]:
    """``from_pretrained`` keyword arguments for a device map, and the offload folder made here.

    Weights that accelerate offloads to disk and cannot read from the checkpoint itself (another
    dtype, a ``.bin`` checkpoint) are written to ``offload_folder``; by default a fresh folder
    under ``$BAGOFDIMS_HOME/offload`` that goes with the model (:func:`adopt_offload_folder`).
    """
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise InvalidArgument("max_memory and offload_folder only apply with a device map: pass "
                                  "device_map='auto' (or a dict of module -> device) as well.")
        return {}, None
    if device is not None:
        raise InvalidArgument(f"device={device!r} and device_map={device_map!r} both say where "
                              "the model goes: pass only one of them.")
    if not isinstance(device_map, (str, dict, torch.device)):
        raise InvalidType(f"device_map={device_map!r}: pass 'auto', 'balanced', 'sequential', a "
                          "device ('cpu', 'cuda:0') or a dict of module name -> device.")
    if isinstance(device_map, str) and device_map not in PLANS:
        parse_device(device_map)  # one named device: refuse one this machine lacks
    kwargs: dict = {"device_map": device_map}
    if max_memory is not None:
        _check_max_memory(max_memory)
        kwargs["max_memory"] = max_memory
    made = None
    if offload_folder is None:
        root = home() / "offload"
        root.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"
        made = offload_folder = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=root))
    kwargs["offload_folder"] = str(offload_folder)
    return kwargs, made


def adopt_offload_folder(model: nn.Module, folder: Path) -> None:
    """Remove a folder made by :func:`offload_kwargs` now if unused, else when the model goes."""
    if not any(folder.iterdir()):
        folder.rmdir()
    else:
        weakref.finalize(model, shutil.rmtree, str(folder), True)


# ---- where a model computes --------------------------------------------------------------------

def _align_hook(module: nn.Module):
    """accelerate's AlignDevicesHook on ``module`` (also inside a SequentialHook), or None."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return None
    from accelerate.hooks import AlignDevicesHook

    for h in getattr(hook, "hooks", (hook,)):
        if isinstance(h, AlignDevicesHook):
            return h
    return None


def execution_device(module: nn.Module) -> torch.device | None:
    """The device ``module`` computes on: its accelerate hook's execution device, else the device
    of its first weight that is not on ``meta``; None when it has neither."""
    hook = _align_hook(module)
    if hook is not None and hook.execution_device is not None:
        dev = hook.execution_device
        try:  # GPU indices as accelerate reads them (cuda, xpu, npu ...)
            from accelerate.utils.modeling import normalize_device

            dev = normalize_device(dev)
        except ImportError:  # older accelerate: an index is a CUDA device
            dev = f"cuda:{dev}" if isinstance(dev, int) else dev
        return torch.device(dev)
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go: the execution device of its input embeddings (accelerate's hook
    for a dispatched model), else of the model; CPU for a model without any tensor."""
    try:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:
        emb = None
    for module in (emb, model):
        dev = execution_device(module) if isinstance(module, nn.Module) else None
        if dev is not None:
            return dev
    if any(True for _ in model.parameters()):
        raise InvalidArgument(
            f"every weight of {type(model).__name__} is on the meta device and no accelerate hook "
            "loads them: load the model with real weights (bd.load_model, or from_pretrained "
            "with a device_map).")
    return torch.device("cpu")


# ---- offloaded weights -------------------------------------------------------------------------

def is_offloaded(model: nn.Module) -> bool:
    """Whether accelerate keeps some of the model's weights off their modules (CPU or disk)."""
    return any(getattr(_align_hook(m), "offload", False) for m in model.modules())


def _tie_source(model: nn.Module):
    """``name -> the name it is tied to`` (transformers' record of tied weights), so a tensor
    shared by several names counts once as when loaded whole: accelerate unties the meta stand-ins
    of offloaded weights at their first forward."""
    ties = getattr(model, "all_tied_weights_keys", None) or {}

    def source(name: str) -> str:
        for _ in range(len(ties) + 1):
            if name not in ties:
                break
            name = ties[name]
        return name

    return source


def _onloaded(hook, name: str, like: torch.Tensor) -> torch.Tensor:
    # the value accelerate's pre-forward would put in, cast as it casts (to the module's dtype)
    return hook.weights_map[name].to(like.dtype)


def offloaded_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, str]]:
    """``(state_dict name, real value on CPU, tie source name)`` of every offloaded tensor now
    on ``meta``, read one at a time from accelerate's offload store (memory stays at one tensor).

    Read-only: the modules are not touched, so this is safe while another thread runs the model.
    """
    from accelerate.utils import named_module_tensors

    source = _tie_source(model)
    for path, module in model.named_modules():
        hook = _align_hook(module)
        if hook is None or not hook.offload or hook.weights_map is None:
            continue
        for name, t in named_module_tensors(module, include_buffers=hook.offload_buffers,
                                            recurse=hook.place_submodules,
                                            remove_non_persistent=True):
            if t.device.type == "meta":
                full = f"{path}.{name}" if path else name
                yield full, _onloaded(hook, name, t), source(full)


def real_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """A module's own tensor (``weight``, ``bias`` ...) with real values: as is, or read from
    accelerate's offload store (on CPU) when it sits on ``meta``; an error when it has none."""
    t = getattr(module, name, None)
    if not isinstance(t, torch.Tensor):
        raise InvalidArgument(f"{type(module).__name__} has no tensor '{name}'.")
    if t.device.type != "meta":
        return t
    # accelerate's dispatch hooks every offloaded module that holds weights itself
    hook = _align_hook(module)
    if hook is not None and hook.offload and hook.weights_map is not None:
        return _onloaded(hook, name, t)
    raise InvalidArgument(
        f"{type(module).__name__}.{name} is on the meta device and no accelerate hook loads it: "
        "load the model with real weights (bd.load_model, or from_pretrained with a device_map).")
