"""Resumable builds: finished chunks of an interrupted sign-cache build, kept on disk.

Each chunk is one safetensors file written to a temporary name and renamed; ``build.json`` holds
the settings the output depends on and the sha256 of every finished chunk, so a resume with other
settings is refused and a torn or damaged chunk is recomputed, never trusted.

Under several processes (:mod:`bagofdims.parallel`) the unfinished chunks are shared between them
(:func:`run_chunks`); each process records its chunks' sha256 in a file of its own (``build.json``
for the main process, ``build.rank-R.json`` for rank R), so no file has two writers, and the main
process assembles every chunk from the directory, as a resumed one-process build does.

While chunks are computed the main process holds an exclusive lock on the directory, so a second
build into it (another thread, or a process not launched with the first) is refused instead of
sharing the work unannounced; a launched group shares it on purpose.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

from bagofdims import parallel
from bagofdims.errors import CacheError, InvalidArgument, ResumeError, SafetensorsError
from bagofdims.storage import exclusive, open_mmap, sha256, write_json


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


LOCK = ".lock"


class Checkpoint:
    """Finished chunks of an interrupted build: one safetensors file each, written atomically,
    their sha256 kept in ``build.json`` so a damaged chunk is recomputed, never trusted.

    Under several processes every process opens it (the main one checks the settings) and each
    saves only its own chunks."""

    def __init__(self, path, key: dict, part=Chunk):
        self.path = Path(path)
        self.part = part  # the class of a chunk: tensors() / from_tensors(), as Chunk
        self.info = self.path / "build.json"
        self.key = key
        self.world = parallel.world()
        # the main process checks (or starts) build.json; the others learn what it found
        self.created, self.known = self.world.on_main(f"opening the checkpoint {self.path}",
                                                      self._open)
        self.sums: dict[str, str] = dict(self.known.get(self._own_file().name, {}))

    def _open(self) -> tuple[str, dict]:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.info.exists():
            saved = _read_build_json(self.info)
            differ = sorted(k for k in set(self.key) | set(saved["key"])
                            if saved["key"].get(k) != self.key.get(k))
            if differ:
                raise ResumeError(
                    f"{self.path} holds an interrupted build with other settings ({', '.join(differ)} "
                    "differ); rerun with the same settings, or delete that directory to start over.")
            created = saved["created"]
        else:
            created = now()
            write_json(self.info, {"key": self.key, "created": created, "chunks": {}})
        return created, self._records()

    def _records(self) -> dict[str, dict[str, str]]:
        """``{file: {chunk file: sha256}}`` from build.json and every process's own file."""
        return {f.name: _read_build_json(f, own=f != self.info).get("chunks", {})
                for f in sorted(self.path.glob("build*.json"))}

    def _own_file(self) -> Path:
        rank = self.world.rank
        return self.info if rank == 0 else self.path / f"build.rank-{rank}.json"

    def _write_info(self) -> None:
        if self.world.rank == 0:
            write_json(self.info, {"key": self.key, "created": self.created, "chunks": self.sums})
        else:
            write_json(self._own_file(), {"chunks": self.sums})

    def lock(self):
        """Exclusive use of the directory while chunks are computed (main process only)."""
        return exclusive(self.path / LOCK, lambda: ResumeError(
            f"{self.path} is being computed into by another thread or process right now; wait "
            "for it to finish, or give this run another directory. (Processes meant to share "
            "the work are started together with accelerate launch.)"))

    def refresh(self) -> None:
        """Re-read what every process recorded (once they have all finished)."""
        self.known = self._records()

    def _file(self, i: int) -> Path:
        return self.path / f"chunk-{i:06d}.safetensors"

    def finished(self, i: int) -> bool:
        """Whether chunk ``i`` is on disk, whole, as some process recorded it."""
        f = self._file(i)
        if not f.exists():
            return False
        digest = sha256(f)
        return self.sums.get(f.name) == digest or any(
            sums.get(f.name) == digest for sums in self.known.values())

    def load(self, i: int) -> Chunk | None:
        if not self.finished(i):
            return None  # never finished, torn or damaged: recompute the chunk
        try:
            return self.part.from_tensors(open_mmap(self._file(i)))
        except SafetensorsError:
            return None

    def save(self, i: int, part) -> None:
        f = self._file(i)
        tmp = f.with_suffix(".tmp")
        save_file(part.tensors(), str(tmp))
        digest = sha256(tmp)
        os.replace(tmp, f)
        self.sums[f.name] = digest
        self._write_info()


def _read_build_json(path: Path, own: bool = False) -> dict:
    """build.json (``own``: a process's ``build.rank-R.json``, chunk sums only), checked."""
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResumeError(f"{path} is damaged ({err}); delete its directory to start over.") from err
    if not isinstance(saved, dict) or not isinstance(saved.get("chunks", {}), dict) or not own and (
            not isinstance(saved.get("key"), dict) or not isinstance(saved.get("created"), str)):
        raise ResumeError(f"{path} is not a build checkpoint; delete its directory to start over.")
    return saved


def run_chunks(ckpt: Checkpoint | None, sizes: list[int], compute: Callable[[int], Chunk],
               bar, what: str = "chunks", report: Callable[[], dict] | None = None,
               reports: list | None = None) -> list[Chunk] | None:
    """Every chunk of a build (``sizes[i]`` rows each) in order: loaded from ``ckpt`` where it is
    finished there, else ``compute(i)`` (then saved); ``bar`` counts rows.

    Under several processes the unfinished chunks are shared between them and each saves its own
    to ``ckpt``; then the main process loads them all and returns them, the others return None.
    ``report`` (e.g. the batch size a process ended at, its peak memory) is called on every
    process once its share is done, and the main process appends the results, in rank order,
    to ``reports``.
    """
    world = ckpt.world if ckpt is not None else parallel.world()
    with ExitStack() as held:
        if ckpt is not None:  # the main process holds the lock for the whole build
            world.on_main(f"locking {ckpt.path}", lambda: held.enter_context(ckpt.lock()))
        return _run(ckpt, world, sizes, compute, bar, what, report, reports)


def _run(ckpt, world, sizes, compute, bar, what, report, reports):
    if world.size == 1:
        parts = []
        for ci, n in enumerate(sizes):
            done = ckpt.load(ci) if ckpt else None
            if done is None:
                done = compute(ci)
                if ckpt:
                    ckpt.save(ci, done)
            else:
                bar.update(n)
            parts.append(done)
        if report is not None and reports is not None:
            reports.append(report())
        return parts
    if ckpt is None:
        raise InvalidArgument(f"{world.size} processes share a build through its checkpoint "
                              "directory: pass checkpoint=DIR, a directory every process sees.")
    # the main process decides what is left, so that every rank shares out the same list
    todo = world.on_main("checking the finished chunks",
                         lambda: [ci for ci in range(len(sizes)) if not ckpt.finished(ci)])
    mine = world.share(todo)
    bar.update(sum(sizes) - sum(sizes[ci] for ci in todo))
    with world.together(f"the build in {ckpt.path}"):
        for ci in mine:
            ckpt.save(ci, compute(ci))
    if report is not None:
        gathered = world.gather(f"the build in {ckpt.path}", report())
        if reports is not None and world.is_main:
            reports.extend(gathered)
    if not world.is_main:
        return None
    bar.update(sum(sizes[ci] for ci in todo) - sum(sizes[ci] for ci in mine))
    ckpt.refresh()
    parts = [ckpt.load(ci) for ci in range(len(sizes))]
    lost = [ci for ci, part in enumerate(parts) if part is None]
    if lost:
        raise CacheError(f"{ckpt.path}: {what} {lost[:5]} are missing or damaged although every "
                         "process finished; the directory must be one all processes see (a shared "
                         "file system). Rerun the same command to recompute them.")
    return parts


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
