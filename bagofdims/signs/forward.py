"""The forward passes of a sign-cache build: batches of single tokens, memory-aware.

One :class:`TokenForward` serves a whole build (every chunk it computes):

- the start token's key/values are computed once (:class:`bagofdims.inputs.SingleTokenInputs`);
- ``dtype="bfloat16"`` runs the forward passes under ``torch.autocast`` (never the default: some
  signs differ from float32; ``scripts/bench_capture.py`` measures how many). The model is not
  copied or changed;
- on out-of-memory the batch halves and the same tokens run again; the smaller size is kept for
  the rest of the build and recorded (``meta.batch_size_used``; the smallest any process ended at
  when several shared the build). Each token's forward is
  independent of the others in its batch, and on CPU the bytes are identical whatever the batch
  size (tested), so such a build equals one that never ran out of memory;
- every site's values are checked finite with one sum each (a full check runs only when a sum
  is not), and then packed without a second check;
- the build's peak memory is measured: ``torch.cuda.max_memory_allocated`` on CUDA (its peak
  statistics are reset when the build starts), the process's peak resident set elsewhere; the
  largest of the processes' peaks when several shared the build.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from bagofdims.capture import Capture
from bagofdims.errors import InvalidArgument, NumericalError, OutOfMemory
from bagofdims.inputs import SingleTokenInputs

AUTOCAST = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "fp16": torch.float16, "half": torch.float16}
_FIXES = ("free the device, run in bfloat16 (dtype='bfloat16' / --dtype bfloat16), or load the "
          "model with device_map='auto' to offload part of it.")


def autocast_name(dtype) -> str | None:
    """``"bfloat16"`` / ``"float16"`` for a build dtype (a name or torch dtype); None: none."""
    if dtype is None:
        return None
    found = AUTOCAST.get(str(dtype).removeprefix("torch.").lower())
    if found is None:
        raise InvalidArgument(f"dtype={dtype!r}: a build runs in the model's own dtype (None) or "
                              "under autocast in 'bfloat16' or 'float16'.")
    return str(found).removeprefix("torch.")


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure of any device (CUDA, MPS, XPU, the CPU allocator)."""
    from accelerate.utils.memory import should_reduce_batch_size  # imported when needed: ~0.5 s

    return isinstance(err, torch.OutOfMemoryError) or should_reduce_batch_size(err) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _describe(err: BaseException) -> str:
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


class TokenForward:
    """Runs a build's batches of single tokens and captures its sites (see the module docstring)."""

    def __init__(self, model, sites: list[str], bos_id: int | None, batch_size: int, device,
                 dtype=None):
        self.model, self.sites, self.device = model, list(sites), torch.device(device)
        self.autocast = autocast_name(dtype)
        self.batch_size = batch_size  # halved on out-of-memory, kept for the rest of the build
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            self.inputs = SingleTokenInputs(model, bos_id, self.device)  # start token: once
        except Exception as err:  # noqa: BLE001 - only out-of-memory is translated
            if not is_out_of_memory(err):
                raise
            raise OutOfMemory(f"Out of memory on {self.device} computing the start token alone "
                              f"({_describe(err)}); {_FIXES}") from None

    def capture(self) -> Capture:
        """Hooks on the sites, ending each forward pass after the last one (no LM head)."""
        return Capture(self.model, self.sites, stop=True, position=-1)

    def batches(self, cap: Capture, ids: torch.Tensor):
        """Yield ``(batch ids, [value of each site])`` over ``ids``, every value finite."""
        start = 0
        while start < len(ids):
            batch = ids[start:start + self.batch_size]
            try:
                with self._autocast():
                    cap.run(**self.inputs(batch))
                failed = None
            except Exception as err:  # noqa: BLE001 - only out-of-memory is handled
                if not is_out_of_memory(err):
                    raise
                failed = _describe(err)
            if failed is not None:  # outside the handler: the traceback's tensors are freed
                self._halve(failed)
                continue
            values = [cap[name] for name in self.sites]
            self._check_finite(values)
            yield batch, values
            start += len(batch)

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST[self.autocast])

    def _halve(self, failed: str) -> None:
        if self.batch_size == 1:
            raise OutOfMemory(
                f"Out of memory on {self.device} even with one token per forward pass ({failed}); "
                f"{_FIXES}")
        from accelerate.utils.memory import clear_device_cache

        self.batch_size = max(1, self.batch_size // 2)
        clear_device_cache(garbage_collection=True)

    def _check_finite(self, values: list[torch.Tensor]) -> None:
        # A NaN or infinity anywhere makes a sum non-finite; only then is each value scanned.
        sums = torch.stack([v.sum(dtype=torch.promote_types(v.dtype, torch.float32)).double()
                            for v in values])
        if bool(torch.isfinite(sums).all()):
            return
        for name, value in zip(self.sites, values):
            if not bool(torch.isfinite(value).all()):
                raise NumericalError(
                    f"NaN or infinity at site {name}; the model's weights or dtype are broken "
                    "(load it in float32, and build without dtype=).")

    def record(self) -> dict:
        """The meta fields of the passes so far: the batch size they ended at, peak memory."""
        peak, measure = self._peak_memory()
        return dict(batch_size_used=self.batch_size, peak_memory=peak, peak_memory_measure=measure)

    @staticmethod
    def combine(records: list[dict]) -> dict:
        """One record for a build several processes shared (:meth:`record` of each): the smallest
        batch size any ended at, the largest peak (each process has its own memory or device)."""
        if len(records) == 1:
            return records[0]
        peaks = [r["peak_memory"] for r in records if r["peak_memory"] is not None]
        return dict(batch_size_used=min(r["batch_size_used"] for r in records),
                    peak_memory=max(peaks) if peaks else None,
                    peak_memory_measure=records[0]["peak_memory_measure"] if peaks else None)

    def _peak_memory(self) -> tuple[int | None, str | None]:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device), "torch.cuda.max_memory_allocated"
        try:
            import resource
        except ImportError:  # no getrusage on this platform
            return None, None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * (1 if sys.platform == "darwin" else 1024), "process peak RSS (ru_maxrss)"
