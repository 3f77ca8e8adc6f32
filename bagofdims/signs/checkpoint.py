"""Resumable builds: finished chunks of an interrupted sign-cache build, kept on disk.

Each chunk is one safetensors file written to a temporary name and renamed; ``build.json`` holds
the settings the output depends on and the sha256 of every finished chunk, so a resume with other
settings is refused and a torn or damaged chunk is recomputed, never trusted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from bagofdims.errors import ResumeError, SafetensorsError
from bagofdims.storage import open_mmap, sha256, write_json


@dataclass
class Chunk:
    """Packed signs, optional float16 magnitudes and widths of every site for one chunk."""

    signs: dict[str, np.ndarray]
    mags: dict[str, np.ndarray]
    widths: dict[str, int]

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"signs/{k}": v for k, v in self.signs.items()}
        out.update({f"magnitudes/{k}": v for k, v in self.mags.items()})
        out.update({f"width/{k}": np.array([w], dtype=np.int64) for k, w in self.widths.items()})
        return out

    @classmethod
    def from_tensors(cls, arrays: dict) -> "Chunk":
        group = lambda kind: {k.split("/", 1)[1]: v for k, v in arrays.items()  # noqa: E731
                              if k.startswith(kind + "/")}
        return cls({k: np.array(v) for k, v in group("signs").items()},
                   {k: np.array(v) for k, v in group("magnitudes").items()},
                   {k: int(v[0]) for k, v in group("width").items()})


class Checkpoint:
    """Finished chunks of an interrupted build: one safetensors file each, written atomically,
    their sha256 kept in ``build.json`` so a damaged chunk is recomputed, never trusted."""

    def __init__(self, path, key: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.info = self.path / "build.json"
        self.key = key
        self.sums: dict[str, str] = {}
        if self.info.exists():
            saved = _read_build_json(self.info)
            differ = sorted(k for k in set(key) | set(saved["key"]) if saved["key"].get(k) != key.get(k))
            if differ:
                raise ResumeError(
                    f"{self.path} holds an interrupted build with other settings ({', '.join(differ)} "
                    "differ); rerun with the same settings, or delete that directory to start over.")
            self.created, self.sums = saved["created"], saved.get("chunks", {})
        else:
            self.created = now()
            self._write_info()

    def _write_info(self) -> None:
        write_json(self.info, {"key": self.key, "created": self.created, "chunks": self.sums})

    def _file(self, i: int) -> Path:
        return self.path / f"chunk-{i:06d}.safetensors"

    def load(self, i: int) -> Chunk | None:
        f = self._file(i)
        if not f.exists() or self.sums.get(f.name) != sha256(f):
            return None  # never finished, torn or damaged: recompute the chunk
        try:
            return Chunk.from_tensors(open_mmap(f))
        except SafetensorsError:
            return None

    def save(self, i: int, part: Chunk) -> None:
        f = self._file(i)
        tmp = f.with_suffix(".tmp")
        save_file(part.tensors(), str(tmp))
        digest = sha256(tmp)
        os.replace(tmp, f)
        self.sums[f.name] = digest
        self._write_info()


def _read_build_json(path: Path) -> dict:
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResumeError(f"{path} is damaged ({err}); delete its directory to start over.") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("key"), dict) or \
            not isinstance(saved.get("created"), str) or not isinstance(saved.get("chunks", {}), dict):
        raise ResumeError(f"{path} is not a build checkpoint; delete its directory to start over.")
    return saved


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
