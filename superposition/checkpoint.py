"""Files of a training run and the resume rule.

A tensor file (``model.safetensors``, ``checkpoint.safetensors``) is one safetensors file whose
header metadata carries a JSON record (``bows``) and the sha256 of its tensors (``sha256``); it is
written to a temporary name, fsync'd and renamed, so a process killed at any moment leaves the
old file or the new one whole. Weights, optimiser moments, step and settings of a checkpoint
therefore always belong together.

A resumed run must use every setting that changes the trained weights; :func:`refuse_changes`
names each one that differs.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from bagofdims.errors import ResumeError, StorageError
from bagofdims.storage import atomic_write_bytes

# Settings that change the trained weights, with how a user sets each. Everything else in
# TrainConfig may differ on resume because it does not change the result: ``data`` is a path
# (its contents are compared through ``data_fingerprint``), ``out`` is the run itself, ``device``
# runs the same arithmetic (CPU vs GPU differ by float rounding only), ``precision`` is compared
# as the ``compute_dtype`` it resolves to, ``checkpoint_every`` only decides when state is saved
# (the data order and schedule depend on the step alone), ``threads`` and ``progress`` change
# speed and display, ``overwrite`` is the way out of this check.
RESULT_SETTINGS = {
    "latent": "--latent", "weight_decay": "--weight-decay", "lr": "--lr", "epochs": "--epochs",
    "batch_size": "--batch-size", "relu": "--relu", "seed": "--seed",
    "compute_dtype": "--precision (the dtype it resolves to on this device)",
    "vocab_size": "--data (vocabulary size)",
    "data_fingerprint": "--data (the contents of the data directory)",
}


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], record: dict) -> None:
    """Write ``tensors`` and the JSON ``record`` into one file, atomically, with a checksum."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"bows": json.dumps(record), "sha256": tensor_digest(tensors)}
    atomic_write_bytes(path, save_bytes(tensors, metadata=meta))


def load_tensors(path: str | Path, fix: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(tensors, record)`` of a file written by :func:`save_tensors`, checked against its
    checksum. A file without a record (written before records existed) gives ``record=None``.
    A truncated, edited or foreign file raises :class:`StorageError` ending with ``fix``."""
    path = Path(path)
    data = path.read_bytes()

    def bad(problem: str) -> StorageError:
        return StorageError(f"{path}: {problem}; {fix}")

    try:
        (hlen,) = struct.unpack("<Q", data[:8])
        if hlen > len(data) - 8:
            raise ValueError(f"header length {hlen} exceeds the file size")
        meta = json.loads(data[8:8 + hlen]).get("__metadata__") or {}
        tensors = load_bytes(data)
    except Exception as err:  # struct, JSON, UTF-8 and safetensors' own errors alike
        raise bad(f"not a complete safetensors file ({err})") from err
    if "sha256" not in meta:
        return tensors, None
    if tensor_digest(tensors) != meta["sha256"]:
        raise bad("the tensors do not match the file's checksum (edited or damaged)")
    try:
        record = json.loads(meta["bows"])
    except (KeyError, json.JSONDecodeError) as err:
        raise bad(f"unreadable record ({err})") from err
    if not isinstance(record, dict):
        raise bad("the record is not a JSON object")
    return tensors, record


def expect_shapes(path: Path, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple],
                  fix: str) -> None:
    """Raise :class:`StorageError` unless ``tensors`` holds exactly these names and shapes."""
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    want = {k: tuple(v) for k, v in shapes.items()}
    if got != want:
        raise StorageError(f"{path}: holds tensors {got}, expected {want}; {fix}")


def refuse_changes(out: Path, saved: dict, wanted: dict) -> None:
    """Raise :class:`ResumeError` naming every result-changing setting where ``wanted`` (this
    run) differs from ``saved`` (the run in ``out``)."""
    diffs = [f"{flag}: {wanted.get(k)!r} here, {saved.get(k)!r} in the saved run"
             for k, flag in RESULT_SETTINGS.items() if saved.get(k) != wanted.get(k)]
    if diffs:
        raise ResumeError(
            f"{out} holds a run trained with other settings ({'; '.join(diffs)}). Use the same "
            f"settings to resume it, or another --out / --overwrite to start afresh.")
