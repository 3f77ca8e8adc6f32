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
import socket
import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from bagofdims.embedded import EMBEDDED, EmbeddedModel, model_dir
from bagofdims.errors import InvalidArgument, InvalidType, ModelNotAvailable
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


def _device(device) -> torch.device | None:
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


def _offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one short probe, no retries), or None if it may be."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy only the hub client can tell
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=3).close()
    except OSError as err:
        return f"{url.hostname}:{port}: {err}"
    return None


def _not_available(name: str, why: str, fix: str, err: BaseException | None) -> ModelNotAvailable:
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err else ""
    return ModelNotAvailable(
        f"Could not load '{name}': it is not an embedded model ({', '.join(EMBEDDED)}), not a "
        f"local directory, and {why}. {fix}{detail}"
    )


def _from_hub(name: str, source: Path | str, load):
    """``load(local_files_only)`` for a local source or the HF cache, then the hub once."""
    if isinstance(source, Path):
        try:
            return load(True)
        except OSError as err:
            raise ModelNotAvailable(
                f"Could not load the model directory '{source}' ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}): it needs config.json, the weights and the "
                "tokenizer files that save_pretrained writes."
            ) from err
    try:
        return load(True)
    except OSError as err:
        cached_err = err
    if _offline():
        raise _not_available(
            name, "the Hugging Face cache does not hold it (HF_HUB_OFFLINE is set, so the hub "
            "was not asked)", "Pass a local model directory, or unset HF_HUB_OFFLINE on a "
            "machine with network to download it.", cached_err) from cached_err
    reason = _hub_unreachable()
    if reason:
        raise _not_available(
            name, f"the Hugging Face hub cannot be reached ({reason})", "Connect to the "
            "network, set HF_ENDPOINT to a mirror, or pass a local model directory.", None,
        ) from cached_err
    try:
        return load(False)
    except OSError as err:
        raise _not_available(
            name, "the Hugging Face hub could not provide it", "Check the id (gated or private "
            "repos need `hf auth login`), or pass a local model directory.", err) from err


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
    **kwargs,
):
    """Load ``(model, tokenizer)`` in eval mode; ``(model, processor)`` for a vision or audio
    model (its image processor, feature extractor or multimodal processor: Whisper's
    ``WhisperProcessor``), picked by :mod:`bagofdims.processors`.

    ``name_or_path``: an embedded short name (``smollm2``, ``gemma3-270m``, ``minilm``), a local
    Hugging Face directory, or a hub id (read from the HF cache; downloaded only when not offline).
    ``device_map="auto"`` spreads a large model over the available devices through accelerate;
    otherwise the model is moved to ``device`` (default: CUDA when available, else CPU).
    ``dtype``: a torch dtype or its name (``"bfloat16"``). A causal LM's tokenizer pads on the
    left (what batched ``generate`` needs), an encoder's on the right. Extra keyword arguments go
    to ``from_pretrained`` of the model.
    """
    import transformers

    dtype = _dtype(dtype)
    dev = _device(device) if device_map is None else None
    name = str(name_or_path)
    display, source = resolve(name)

    def load(local_only: bool):
        auto = EMBEDDED[name].auto_class if name in EMBEDDED else _auto_class_for(source, local_only)
        tok = load_preprocessor(source, local_only, auto)
        load_kwargs = dict(dtype=dtype, local_files_only=local_only, **kwargs)
        if device_map is not None:
            load_kwargs["device_map"] = device_map
        return getattr(transformers, auto).from_pretrained(source, **load_kwargs), tok, auto

    model, tok, auto = _from_hub(name, source, load)
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

    tok, causal = _from_hub(name, source, load)
    return _prepare_tokenizer(tok, causal)


# Names of models loaded here, without writing anything onto the user's model.
_NAMES: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_name(model) -> str:
    """The name a model was loaded under (recorded in caches and catalogs)."""
    return _NAMES.get(model) or model.config.name_or_path or type(model).__name__


def tokenizer_fingerprint(tok) -> str:
    """Fingerprint of a tokenizer's vocabulary and special tokens."""
    vocab = tok.get_vocab()
    h = hashlib.sha256()
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode())
    h.update(json.dumps([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]).encode())
    return h.hexdigest()[:16]


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
            f"'{name}' is on the meta device (not loaded, or offloaded by device_map): a model "
            "without real weights cannot be fingerprinted; load it with real weights "
            "(no disk/CPU offload)."
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


def _compute(state: dict[str, torch.Tensor]) -> WeightFingerprint:
    # Each distinct tensor is hashed once; the result is sha256 over (name, shape, dtype,
    # sha256(bytes)) in name order, so tied weights cost one pass and the order of
    # registration does not matter. Bytes are in the machine's (little-endian) order.
    outer = hashlib.sha256(SCHEME.encode() + b"\n")
    seen: dict[tuple, bytes] = {}
    n_bytes = 0
    for name in sorted(state):
        t = state[name]
        ident = (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        digest = seen.get(ident) if t.device.type != "meta" else None
        if digest is None:
            raw = _tensor_bytes(name, t)
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
    fp = _compute(state)
    if key is not None:
        with _LOCK:
            _FINGERPRINTS[model] = (key, fp)
    return fp


def weight_fingerprint(model: torch.nn.Module, refresh: bool = False) -> str:
    """``"sha256:<32 hex>"`` over every byte of every weight (state_dict), with names and dtypes.

    Cached per model object and recomputed when any tensor is replaced or edited in place
    (data pointer or autograd version counter). Writes through ``param.data`` bypass the version
    counter: after such an edit pass ``refresh=True``.
    """
    return _fingerprint(model, refresh).fingerprint


def fingerprint_info(model: torch.nn.Module, refresh: bool = False) -> dict:
    """The fingerprint and what it covered: algorithm, scheme, scope, n_tensors, n_bytes, dtypes."""
    return asdict(_fingerprint(model, refresh))
