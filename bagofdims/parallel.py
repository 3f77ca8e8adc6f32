"""Several processes on one job: the process group ``accelerate launch`` (or ``torchrun``) starts.

    accelerate launch --multi_gpu --num_processes 4 -m bagofdims capture --model M

Each process is a *rank* of the *world*. A job splits its units of work (chunks of tokens, shards
of texts) with :meth:`World.share` (accelerate's ``split_between_processes``: contiguous blocks,
the first ranks one longer), each rank saves what it finishes in a directory all ranks see, and
the main process (rank 0) assembles the result from there, as a resumed one-process run does; so
the output is byte-identical to one process's. Only the main process writes the final result.

Without a launcher (``WORLD_SIZE`` unset or 1) the world is this one process and nothing here
imports accelerate or touches ``torch.distributed``. Under a launcher accelerate's
``PartialState`` creates the process group: NCCL where CUDA is available, gloo on CPU. Every step
that waits for the other ranks is also an exchange of errors (:meth:`World.together`,
:meth:`World.on_main`): an error on any rank ends every rank with that rank's message, and a rank
that dies or hangs is reported (after ``BAGOFDIMS_PROCESS_TIMEOUT`` seconds, default 3600, for
one that hangs) instead of being waited for forever.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from bagofdims.errors import BagOfDimsError, InvalidArgument, ProcessGroupError

TIMEOUT_ENV = "BAGOFDIMS_PROCESS_TIMEOUT"
DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` (``state``: accelerate's, if several)."""

    rank: int = 0
    size: int = 1
    state: object = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self):
        """The device this rank computes on (``cuda:LOCAL_RANK`` under NCCL); None alone."""
        return None if self.state is None else self.state.device

    def __str__(self) -> str:
        return f"process {self.rank} of {self.size}"

    def rank_device(self, device: str | None) -> str | None:
        """The device a rank loads its model on: its own GPU for ``None``/``auto``/``cuda``
        under several processes with CUDA; otherwise ``device`` as given."""
        if self.size > 1 and device in (None, "auto", "cuda") and self.device.type == "cuda":
            return str(self.device)
        return device

    def share(self, items) -> list:
        """This rank's part of ``items`` (all of them when alone)."""
        items = list(items)
        if self.size == 1:
            return items
        with self.state.split_between_processes(items) as part:
            return list(part)

    @contextmanager
    def together(self, what: str):
        """Run the block on every rank, then wait for all of them; if it failed on any rank, raise
        on every rank (the failing rank its own error, the others a :class:`ProcessGroupError`
        naming it)."""
        if self.size == 1:
            yield
            return
        error = None
        try:
            yield
        except Exception as err:  # noqa: BLE001 - told to every rank, then raised here
            error = err
        failed = [(r, m) for r, m in enumerate(self._gather(what, _describe(error))) if m]
        if error is not None:
            raise error
        if failed:
            rank, message = failed[0]
            raise ProcessGroupError(f"{what} stopped: process {rank} of {self.size} failed: "
                                    f"{message}", relayed=True)

    def on_main(self, what: str, fn):
        """``fn()`` run on the main process only; its result (or its error) on every rank."""
        if self.size == 1:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - told to every rank, then raised here
                error = err
        box = [(result, _describe(error))]
        self._collective(what, lambda dist: dist.broadcast_object_list(box, src=0))
        if error is not None:
            raise error
        result, message = box[0]
        if message:
            raise ProcessGroupError(f"{what} stopped: the main process failed: {message}",
                                    relayed=True)
        return result

    def gather(self, what: str, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        return [obj] if self.size == 1 else self._gather(what, obj)

    def _gather(self, what: str, obj) -> list:
        out = [None] * self.size
        self._collective(what, lambda dist: dist.all_gather_object(out, obj))
        return out

    def _collective(self, what: str, op) -> None:
        import torch.distributed as dist

        try:
            op(dist)
        except RuntimeError as err:  # a peer died (connection closed) or timed out
            # gloo/NCCL prefix their source location and add advice: keep the first sentence
            why = re.sub(r"\[[^\]]*:\d+\]\s*", "", " ".join(str(err).split())).split(". ")[0]
            raise ProcessGroupError(
                f"{what}: another process of the {self.size} stopped or did not answer within "
                f"{self.timeout:.0f} s ({why[:160]}); its own message says why. Rerun the same "
                f"command to resume (raise {TIMEOUT_ENV} if a process is just slow).",
                relayed=True) from err


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return str(error) if isinstance(error, BagOfDimsError) else f"{type(error).__name__}: {error}"


def launched_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InvalidArgument(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch "
                              "with accelerate launch or torchrun, which set it.") from None


def is_main_process() -> bool:
    """Whether this is the main process (rank 0, or no launcher), without joining any group."""
    return os.environ.get("RANK", "0") in ("", "0")


def quiet_unless_main() -> None:
    """On a process other than the main one, turn off the Hugging Face libraries' progress bars
    (model loading, datasets); ours take ``progress=World.is_main``."""
    if is_main_process():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # imported already: the variable was read
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidArgument(f"{TIMEOUT_ENV}={raw!r}: give a positive number of seconds.")
    return value


def world() -> World:
    """The world this process belongs to (creating the process group on first use)."""
    if launched_size() <= 1:
        return World()
    import torch
    from accelerate import PartialState

    seconds = timeout()
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or \
        not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=timedelta(seconds=seconds))
    if state.num_processes != launched_size():  # else every process would do all the work
        raise ProcessGroupError(
            f"Launched as {launched_size()} processes, but accelerate's state (created earlier in "
            f"this process, {state.distributed_type}) has {state.num_processes}; call "
            "bagofdims.parallel.world() before anything else creates it, or create it with "
            "PartialState(cpu=True) on a machine without GPUs.")
    return World(state.process_index, state.num_processes, state, seconds)
