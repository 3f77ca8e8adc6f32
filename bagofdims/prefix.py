"""Forward inputs for batches of single tokens, each alone or after a BOS token.

The sign cache and the probes' raw states run one forward pass per vocabulary token. With a BOS
first, every input is ``[BOS, token]``: the BOS part is identical for all of them, so for decoder
LMs its key/value cache is computed once and repeated across each batch, and every forward then
runs one position instead of two (about half the work). The result is the same computation up to
float rounding (tests compare it with the two-token input). Models whose forward takes no cache
(encoders) get the two-token input.
"""
from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from .capture import no_cache_kwargs


class SingleTokenInputs:
    """``inputs(ids)`` → keyword arguments of ``model(...)`` for the tokens ``ids`` ``[B]``.

    ``bos_id=None``: each token alone. Otherwise BOS then the token, through a cached BOS prefix
    where the model supports it (``self.cached`` says whether it does).
    """

    def __init__(self, model: nn.Module, bos_id: int | None, device=None):
        params = inspect.signature(model.forward).parameters
        self.device = device if device is not None else next(model.parameters()).device
        self.bos_id = bos_id
        self.no_cache = no_cache_kwargs(model)
        self.prefix, self.key = None, None
        key = next((k for k in ("cache", "past_key_values") if k in params), None)
        if bos_id is not None and key is not None and "use_cache" in params:
            self.prefix, self.key = _bos_cache(model, bos_id, self.device), key

    @property
    def cached(self) -> bool:
        return self.prefix is not None

    def __call__(self, ids: torch.Tensor) -> dict:
        ids = ids.to(self.device).reshape(-1, 1)
        if self.bos_id is not None and self.prefix is None:
            ids = torch.cat([torch.full_like(ids, self.bos_id), ids], dim=1)
        if self.prefix is None:
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.no_cache}
        kv = copy.deepcopy(self.prefix)  # the forward appends to it: one fresh copy per batch
        kv.batch_repeat_interleave(len(ids))
        mask = torch.ones(len(ids), 2, dtype=ids.dtype, device=ids.device)
        return {"input_ids": ids, "attention_mask": mask, self.key: kv, "use_cache": True}


def _bos_cache(model: nn.Module, bos_id: int, device):
    """The key/value cache of ``[BOS]`` alone, or None if the model does not return a usable one."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([[bos_id]], device=device), use_cache=True)
    for name in ("cache", "past_key_values"):
        kv = getattr(out, name, None)
        if kv is not None and hasattr(kv, "batch_repeat_interleave"):
            return kv
    return None
