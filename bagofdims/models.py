"""Load a model and its tokenizer (embedded name, local directory or hub id), and fingerprint both.

Loading never waits on a network it cannot use: a hub id is looked up in the local Hugging Face
cache first, and the hub is asked once, only when not offline and reachable. The weight
fingerprint hashes every byte of every weight, so a cache or catalog is never accepted for a model
whose weights differ in a single value.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bagofdims.devices import adopt_offload_folder, offload_kwargs, offloaded_tensors, parse_device
from bagofdims.embedded import EMBEDDED, EmbeddedModel, model_dir
from bagofdims.errors import InvalidArgument, InvalidType, ModelNotAvailable
from bagofdims.hub import from_hub
from bagofdims.processors import PROCESSOR_CLASSES, is_tokenizer, load_preprocessor

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "EmbeddedModel", "ModelNotAvailable", "fingerprint_info",
    "load_model", "load_tokenizer", "model_dir", "model_name", "resolve", "tokenizer_fingerprint",
    "weight_fingerprint",
]

DEFAULT_MODEL = "smollm2"
_PROCESSOR_MODELS = PROCESSOR_CLASSES  # returned with their processor
_CAUSAL_TYPES = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "mistral", "gpt2"}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
                  "bf16": "bfloat16", "fp64": "float64", "double": "float64"}


def resolve(name_or_path: str | os.PathLike) -> tuple[str, Path | str]:
    """Map a short name, local directory or hub id to ``(display name, path or id)``."""
    name = str(name_or_path)
    if name in EMBEDDED:
        return name, model_dir(name)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(
                f"'{name}' is a directory without config.json: point to a Hugging Face "
                "model directory (save_pretrained output)."
            )
        return str(path.resolve()), path
    # A hub id is "org/name" or "name"; anything else was meant as a path.
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        raise ModelNotAvailable(
            f"'{name}' is not an embedded model ({', '.join(EMBEDDED)}) and no such directory "
            "exists: check the path."
        )
    return name, name


def _dtype(dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        name = _DTYPE_ALIASES.get(dtype.lower().removeprefix("torch."), dtype.lower())
        found = getattr(torch, name.removeprefix("torch."), None)
        if isinstance(found, torch.dtype) and found.is_floating_point:
            return found
    raise InvalidArgument(
        f"dtype {dtype!r} is not a floating-point torch dtype: pass torch.float32, "
        "'float32', 'float16', 'bfloat16' or 'auto'."
    )


def _auto_class_for(source, local_only: bool) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    archs = getattr(config, "architectures", None) or []
    for arch in archs:  # e.g. a saved Whisper directory: the class that generates, not AutoModel
        if arch in _PROCESSOR_MODELS:
            return arch
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "AutoModelForCausalLM"
    if getattr(config, "is_decoder", False) or config.model_type in _CAUSAL_TYPES:
        return "AutoModelForCausalLM"
    return "AutoModel"


def _prepare_tokenizer(tok, causal: bool):
    # Batched generate appends to the right end of every row, so a decoder's prompts must be
    # left-padded; encoders read every position and keep the usual right padding.
    tok.padding_side = "left" if causal else "right"
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    **kwargs,
):
    """Load ``(model, tokenizer)`` in eval mode; ``(model, processor)`` for a vision or audio
    model (its image processor, feature extractor or multimodal processor: Whisper's
    ``WhisperProcessor``), picked by :mod:`bagofdims.processors`.

    ``name_or_path``: an embedded short name (``smollm2``, ``gemma3-270m``, ``minilm``), a local
    Hugging Face directory, or a hub id (read from the HF cache; downloaded only when not offline).
    ``device_map="auto"`` (or a dict of module -> device, ``"disk"`` included) spreads a model
    larger than one device over the GPUs, the CPU and the disk through accelerate, each at most
    ``max_memory`` (e.g. ``{0: "20GiB", "cpu": "60GiB"}``); weights offloaded to disk that cannot
    be read from the checkpoint itself go to ``offload_folder`` (default: a folder under
    ``$BAGOFDIMS_HOME/offload`` removed with the model). Otherwise the model is moved to
    ``device`` (default: CUDA when available, else CPU).
    ``dtype``: a torch dtype or its name (``"bfloat16"``). A causal LM's tokenizer pads on the
    left (what batched ``generate`` needs), an encoder's on the right. Extra keyword arguments go
    to ``from_pretrained`` of the model.
    """
    import transformers

    dtype = _dtype(dtype)
    name = str(name_or_path)
    display, source = resolve(name)
    placed, made = offload_kwargs(display, device, device_map, max_memory, offload_folder)
    dev = parse_device(device) if device_map is None else None

    def load(local_only: bool):
        auto = EMBEDDED[name].auto_class if name in EMBEDDED else _auto_class_for(source, local_only)
        tok = load_preprocessor(source, local_only, auto)
        load_kwargs = dict(dtype=dtype, local_files_only=local_only, **kwargs, **placed)
        return getattr(transformers, auto).from_pretrained(source, **load_kwargs), tok, auto

    try:
        model, tok, auto = from_hub(name, source, load)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    if made is not None:
        adopt_offload_folder(model, made)
    if dev is not None:
        model.to(dev)
    model.eval()
    _NAMES[model] = name if name in EMBEDDED else display
    if auto in _PROCESSOR_MODELS or not is_tokenizer(tok):
        return model, tok
    return model, _prepare_tokenizer(tok, auto == "AutoModelForCausalLM")


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_MODEL):
    """Only the tokenizer of a model (embedded name, local dir or hub id), padded as in load_model."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    _, source = resolve(name)

    def load(local_only: bool):
        tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        if name in EMBEDDED:
            return tok, EMBEDDED[name].causal
        try:
            return tok, _auto_class_for(source, local_only) == "AutoModelForCausalLM"
        except (OSError, ValueError):  # a tokenizer-only repo: no config to tell
            return tok, tok.padding_side == "left"

    tok, causal = from_hub(name, source, load)
    return _prepare_tokenizer(tok, causal)


# Names of models loaded here, without writing anything onto the user's model.
_NAMES: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_name(model) -> str:
    """The name a model was loaded under (recorded in caches and catalogs)."""
    return _NAMES.get(model) or model.config.name_or_path or type(model).__name__


def tokenizer_fingerprint(tok, refresh: bool = False) -> str:
    """Fingerprint of a tokenizer's vocabulary and special tokens.

    Cached per tokenizer object (reading and hashing a vocabulary takes ~0.1 s) and recomputed
    when its size, special token ids or backend change (``add_tokens``, ``add_special_tokens``);
    after editing its vocabulary in place any other way pass ``refresh=True``.
    """
    key = (len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
           id(getattr(tok, "_tokenizer", None)))
    try:
        with _LOCK:
            hit = _TOKENIZER_FINGERPRINTS.get(tok)
    except TypeError:  # not weak-referenceable or not hashable: never cached
        hit = None
    if hit is not None and hit[0] == key and not refresh:
        return hit[1]
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]),
                        ensure_ascii=False).encode())
    h.update(json.dumps(list(key[1:4])).encode())
    fp = h.hexdigest()[:16]
    try:
        with _LOCK:
            _TOKENIZER_FINGERPRINTS[tok] = (key, fp)
    except TypeError:
        pass
    return fp


_TOKENIZER_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ---- weight fingerprint -------------------------------------------------------------------------

ALGORITHM = "sha256"  # SHA-NI makes it ~1 GB/s per core; stable across machines and installs
SCHEME = "bagofdims-weights-v1"
_CHUNK = 64 << 20  # bytes copied from an accelerator to the host at a time


@dataclass(frozen=True)
class WeightFingerprint:
    """What a weight fingerprint is and what it covered."""

    fingerprint: str  # "sha256:<32 hex>"
    algorithm: str
    scheme: str  # how the tensors were combined (see _compute)
    scope: str  # which tensors were hashed
    n_tensors: int  # state_dict entries (tied tensors counted under each name)
    n_bytes: int  # bytes hashed (a tensor shared by several names once)
    dtypes: list[str]


def _tensor_bytes(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.device.type == "meta":
        raise InvalidArgument(
            f"'{name}' is on the meta device and no accelerate offload hook holds its value (a "
            "model built on meta, or its hooks removed): a model without real weights cannot be "
            "fingerprinted; load it with real weights (bd.load_model, device_map for offload)."
        )
    try:
        flat = t.detach().resolve_conj().resolve_neg().reshape(-1).contiguous()
        return flat.view(torch.uint8)
    except RuntimeError as err:
        raise InvalidType(
            f"cannot read the raw bytes of '{name}' ({type(t).__name__}, {t.dtype}, {t.layout}): "
            "convert the model to dense tensors before fingerprinting it."
        ) from err


def _digest(raw: torch.Tensor) -> bytes:
    """sha256 of a flat uint8 tensor's bytes; host memory is hashed in place, no copy."""
    h = hashlib.sha256()
    if raw.device.type == "cpu":
        h.update(raw.numpy())
    else:
        for start in range(0, raw.numel(), _CHUNK):
            h.update(raw[start:start + _CHUNK].cpu().numpy())
    return h.digest()


def _offloaded(model: torch.nn.Module, state: dict) -> dict[str, tuple]:
    """``name -> (identity, digest, bytes)`` of the weights accelerate keeps off their modules,
    read from its offload store one tensor at a time (a model offloaded to disk is never loaded
    whole)."""
    if not any(t.device.type == "meta" for t in state.values()):
        return {}
    out = {}
    for name, value, tied_to in offloaded_tensors(model):
        if name in state and state[name].device.type == "meta":
            raw = _tensor_bytes(name, value)
            out[name] = (("offload", tied_to, value.dtype, tuple(value.shape)), _digest(raw), raw.numel())
    return out


def _compute(state: dict[str, torch.Tensor], offloaded: dict[str, tuple]) -> WeightFingerprint:
    # Each distinct tensor is hashed once; the result is sha256 over (name, shape, dtype,
    # sha256(bytes)) in name order, so tied weights cost one pass and the order of
    # registration does not matter. Bytes are in the machine's (little-endian) order.
    # Offloaded weights hash their real values: the same fingerprint as the model loaded whole.
    outer = hashlib.sha256(SCHEME.encode() + b"\n")
    seen: dict[tuple, bytes] = {}
    n_bytes = 0
    for name in sorted(state):
        t = state[name]
        if t.device.type == "meta" and name in offloaded:
            ident, digest, size = offloaded[name]
            n_bytes += 0 if ident in seen else size
            seen[ident] = digest
        else:
            ident = (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
            digest = seen.get(ident) if t.device.type != "meta" else None
            if digest is None:
                raw = _tensor_bytes(name, t)  # a meta tensor that nothing loads is refused here
                digest = seen[ident] = _digest(raw)
                n_bytes += raw.numel()
        outer.update(f"{name}\0{tuple(t.shape)}\0{str(t.dtype).removeprefix('torch.')}\0".encode())
        outer.update(digest)
    return WeightFingerprint(
        fingerprint=f"{ALGORITHM}:{outer.hexdigest()[:32]}", algorithm=ALGORITHM, scheme=SCHEME,
        scope="state_dict (parameters and persistent buffers)", n_tensors=len(state),
        n_bytes=n_bytes,
        dtypes=sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
    )


def _state_key(state: dict[str, torch.Tensor]) -> list[tuple] | None:
    """Cheap identity of the weights: each tensor object, its data pointer and version counter."""
    key = []
    for name, t in state.items():
        if t.device.type == "meta":  # offloaded: accelerate swaps the meta tensor every forward
            key.append((name, _OFFLOADED, 0, 0, t.dtype, tuple(t.shape)))
            continue
        try:
            version = t._version
        except RuntimeError:  # inference tensors keep no version counter: never cache
            return None
        key.append((name, weakref.ref(t), t.data_ptr(), version, t.dtype, tuple(t.shape)))
    return key


def _same(old: list[tuple], new: list[tuple]) -> bool:
    # Weak references compare by identity here (== on live ones would compare tensor values).
    return len(old) == len(new) and all(
        a[0] == b[0] and a[1]() is b[1]() is not None and a[2:] == b[2:] for a, b in zip(old, new)
    )


_OFFLOADED = weakref.ref(_offloaded)  # any offloaded tensor in a state key (its store is fixed)
_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _fingerprint(model: torch.nn.Module, refresh: bool) -> WeightFingerprint:
    if not isinstance(model, torch.nn.Module):
        raise InvalidType(f"expected a torch.nn.Module, got {type(model).__name__}.")
    # Non-persistent buffers (rotary inv_freq and the like) are derived state that some models
    # recompute during a forward: hashing them would make a fingerprint drift between calls.
    state = model.state_dict(keep_vars=True)
    key = _state_key(state)
    with _LOCK:
        hit = _FINGERPRINTS.get(model)
    if hit is not None and key is not None and not refresh and _same(hit[0], key):
        return hit[1]
    fp = _compute(state, _offloaded(model, state))
    if key is not None:
        with _LOCK:
            _FINGERPRINTS[model] = (key, fp)
    return fp


def weight_fingerprint(model: torch.nn.Module, refresh: bool = False) -> str:
    """``"sha256:<32 hex>"`` over every byte of every weight (state_dict), with names and dtypes.

    Cached per model object and recomputed when any tensor is replaced or edited in place
    (data pointer or autograd version counter). Writes through ``param.data`` bypass the version
    counter: after such an edit pass ``refresh=True``. Weights that accelerate offloads (to CPU or
    disk, ``device_map``) are read from its offload store, so an offloaded model has the
    fingerprint of the same model loaded whole.
    """
    return _fingerprint(model, refresh).fingerprint


def fingerprint_info(model: torch.nn.Module, refresh: bool = False) -> dict:
    """The fingerprint and what it covered: algorithm, scheme, scope, n_tensors, n_bytes, dtypes."""
    return asdict(_fingerprint(model, refresh))
