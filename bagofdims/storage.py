"""Files on disk: atomic directory writes, checksums, memory-mapped safetensors.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping names to
dtype / shape / byte offsets, then the raw data. Mapping it ourselves keeps loads lazy and lets
us check that the file is complete before anything trusts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
from bagofdims.errors import AlreadyExists, SafetensorsError

_DTYPES = {
    "U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "BOOL": np.bool_,
}



def open_mmap(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``name -> array`` (copy-on-write memory maps) for every tensor in the file."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise SafetensorsError(f"{path.name}: {size} bytes, too short for a header")
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        if hlen > size - 8:
            raise SafetensorsError(f"{path.name}: header length {hlen} exceeds the file size")
        try:
            header = json.loads(f.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SafetensorsError(f"{path.name}: unreadable header ({err})") from err
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise SafetensorsError(f"{path.name}: tensor {name} has unsupported dtype {info.get('dtype')}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if end - begin != expected or base + end > size:
            raise SafetensorsError(
                f"{path.name}: tensor {name} needs bytes {begin}..{end} but the file holds "
                f"{size - base} data bytes (truncated?)"
            )
        if expected == 0:
            out[name] = np.zeros(shape, dtype=dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="c", offset=base + begin, shape=shape)
    return out


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def atomic_dir(target: str | os.PathLike, fill, overwrite: bool = False) -> Path:
    """Create directory ``target`` by ``fill(tmp_dir)`` on a temporary sibling, then rename.

    Readers never see a half-written directory; an existing one is replaced only with
    ``overwrite=True``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise AlreadyExists(f"{target} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
