"""Files on disk: atomic directory writes, checksums, memory-mapped safetensors.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping names to
dtype / shape / byte offsets, then the raw data. Mapping it ourselves keeps loads lazy and lets
us check that the file is complete before anything trusts it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import struct
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

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
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(f"{path.name}: tensor {name} has no description in the header")
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise SafetensorsError(f"{path.name}: tensor {name} has unsupported dtype {info.get('dtype')!r}")
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if not (_ints(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]) or \
                not (_ints(shape) and all(n >= 0 for n in shape)):
            raise SafetensorsError(f"{path.name}: tensor {name} has invalid shape {shape!r} or "
                                   f"data_offsets {offsets!r}")
        begin, end = offsets
        shape = tuple(shape)
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


def _ints(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


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
    ``overwrite=True``, by an atomic exchange where the OS has one (Linux ``renameat2``), else by
    two renames that :func:`recover` completes if the writer dies between them. What killed
    writers left behind (``.NAME.tmp-PID``, ``.NAME.old-PID``) is cleaned first.
    """
    target = Path(target)
    with _dir_lock(target):
        recover(target)
        if target.exists() and not overwrite:
            raise AlreadyExists(f"{target} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            fill(tmp)
            if not target.exists():
                os.replace(tmp, target)
            elif _exchange(tmp, target):
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the old directory
            else:
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(target.parent)
    return target


def recover(target: str | os.PathLike) -> None:
    """Finish or undo what a killed :func:`atomic_dir` / :func:`write_json` left next to
    ``target`` (restores the old directory if the writer died between its two renames)."""
    target = Path(target)
    remove_stale_temps(target.parent, names=[target.name])


@contextmanager
def exclusive(lock_file: str | os.PathLike, refuse: Callable[[], Exception]):
    """Hold an exclusive advisory lock on ``lock_file`` (created if missing) for the block, or
    raise ``refuse()`` at once when another process or thread holds it. flock locks belong to an
    open file, so two threads of one process exclude each other too; the OS drops the lock of a
    process that dies, so no stale lock is ever left behind."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the caller's responsibility
        yield
        return
    with open(lock_file, "wb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse() from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _dir_lock(target: Path) -> threading.Lock:
    # two threads of one process writing one target would share a temp name
    key = str(target.resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # old kernel or a file system without exchange: use two renames
    raise OSError(err, os.strerror(err), str(b))


class atomic_file:
    """``with atomic_file(path) as f:`` writes ``path`` all or nothing.

    ``f`` is a temporary sibling ``.NAME.tmp-PID``; on a clean exit it is flushed, fsync'd and
    renamed onto ``path`` (then the directory is fsync'd), on an exception removed. A reader, or
    a process killed at any moment, sees the old file or the new one, never a part of either.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb"):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.mode = mode

    def __enter__(self):
        self._file = open(self.tmp, self.mode)
        return self._file

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            try:
                if exc_type is None:
                    self._file.flush()
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return False
        _fsync_dir(self.path.parent)
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through :class:`atomic_file`."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def _fsync_dir(directory: Path) -> None:
    # makes the rename itself durable; some file systems cannot open a directory, which is fine
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike, names=None) -> list[Path]:
    """Clean what killed writers left in ``directory``; returns the paths removed or restored.

    Matches the ``.NAME.tmp-TAG`` entries of :func:`write_json`, :class:`atomic_file` and
    :func:`atomic_dir` and the ``.NAME.old-TAG`` of :func:`atomic_dir` (only those NAMEs in
    ``names`` when given). An entry whose TAG is the id of a live process belongs to a writer
    still at work and is kept. An ``.old`` entry whose NAME is missing is the last complete
    copy (the writer died between its two renames), so it is renamed back instead of removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = []
    for entry in directory.iterdir():
        base, sep, tag = entry.name.rpartition("-")
        if not (entry.name.startswith(".") and sep and tag):
            continue
        name, dot, kind = base[1:].rpartition(".")
        if not dot or kind not in ("tmp", "old") or (names is not None and name not in names):
            continue
        if tag.isdigit() and _pid_alive(int(tag)):
            continue
        target = directory / name
        if kind == "old" and not target.exists():
            os.replace(entry, target)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry)
    return done


def package_dir(
    module_name: str,
    install: str | None = None,
    needed_for: str = "This",
    error: type[Exception] | None = None,
) -> Path:
    """Directory of an installed package that ships data files, found without importing it.

    Some data packages import heavy optional dependencies at import time, so only
    :func:`importlib.util.find_spec` is used. A missing package raises ``error`` (default
    :class:`MissingFile`) naming ``install`` (default ``pip install <module-with-dashes>``).
    """
    import importlib.util

    from bagofdims.errors import MissingFile

    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        found = None
    if found is None or not found.submodule_search_locations:
        install = install or f"pip install {module_name.replace('_', '-')}"
        raise (error or MissingFile)(
            f"{needed_for} needs the package {module_name!r}, which is not installed: "
            f"run `{install}`."
        )
    return Path(next(iter(found.submodule_search_locations)))


def home() -> Path:
    """Where the project keeps what it makes once (converted models, generated data, offload
    folders): ``$BAGOFDIMS_HOME`` or the user cache dir."""
    env = os.environ.get("BAGOFDIMS_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bagofdims"))
