"""Pooling rules: one vector per example from a site's ``[batch, positions, width]`` states.

Positions are counted among an example's **valid** positions (those its attention mask keeps;
all of them when the processor gives no mask), so a rule means the same with left or right
padding:

- ``"mean"``: the mean over every valid position;
- ``"cls"``: the first valid position (position 0 with right padding or none);
- ``"last"``: the last valid position;
- an ``int`` ``p``: the ``p``-th valid position (negative: counted from the last);
- ``(start, stop)``: the mean over valid positions ``start..stop-1`` (Python slice rules,
  ``None`` and negatives allowed), e.g. a frame range of an audio clip.

A rule is recorded in a cache's metadata by its canonical name (``"mean"``, ``"cls"``,
``"last"``, ``"pos:3"``, ``"range:2:10"``, ``"range:-4:"``), which :func:`parse_pool` reads back.

A mask longer than the site's positions by a whole factor (Whisper's feature extractor masks
log-mel frames; its encoder halves them with a stride-2 convolution) is reduced over windows of
that factor: a position is valid when any of its frames is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bagofdims.errors import InvalidArgument, InvalidType, OutOfRange


@dataclass(frozen=True)
class Pool:
    """A parsed pooling rule: the mean over valid positions ``start..stop-1`` or one position."""

    name: str  # canonical name, recorded in the cache
    start: int | None = None
    stop: int | None = None
    position: int | None = None  # one position instead of a range


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_pool(pool) -> Pool:
    """A :class:`Pool` from a rule (see the module docstring) or its canonical name."""
    if isinstance(pool, Pool):
        return pool
    if pool == "mean":
        return Pool("mean")
    if pool == "cls":
        return Pool("cls", position=0)
    if pool == "last":
        return Pool("last", position=-1)
    if _is_int(pool):
        return Pool(f"pos:{pool}", position=pool)
    if isinstance(pool, str) and pool.startswith(("pos:", "range:")):
        try:
            parts = [int(p) if p else None for p in pool.split(":")[1:]]
        except ValueError:
            parts = []
        if pool.startswith("pos:") and len(parts) == 1 and parts[0] is not None:
            return parse_pool(parts[0])
        if pool.startswith("range:") and len(parts) == 2:
            return parse_pool(tuple(parts))
    if isinstance(pool, (tuple, list)) and len(pool) == 2 and \
            all(p is None or _is_int(p) for p in pool):
        start, stop = pool
        return Pool(f"range:{'' if start is None else start}:{'' if stop is None else stop}",
                    start=start, stop=stop)
    raise InvalidArgument(f"pool={pool!r} is not a pooling rule: use 'mean', 'cls', 'last', an int "
                          "position or a (start, stop) range of positions.")


def valid_positions(mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Bool ``[batch, length]``: which positions of a site are real input (not padding)."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    mask = mask.to(device=device).bool()
    if mask.shape[1] == length:
        return mask
    if mask.shape[1] % length == 0:  # e.g. log-mel frames -> encoder positions (stride 2)
        return mask.reshape(batch, length, mask.shape[1] // length).any(-1)
    raise InvalidArgument(
        f"The processor's attention mask has {mask.shape[1]} positions but the site has "
        f"{length}; pool with a rule that needs no mask, or pass processor_kwargs="
        "{'return_attention_mask': False}.")


def pool_states(value: torch.Tensor, mask: torch.Tensor | None, pool: Pool) -> torch.Tensor:
    """``float32 [batch, width]``: ``value`` ``[batch, positions, width]`` pooled by ``pool``."""
    if value.dim() == 2:  # one state per example (CLIP vision's final: the CLS only): 1 position
        value, mask = value[:, None], None
    if value.dim() != 3:
        raise InvalidType(f"A site gave shape {tuple(value.shape)}; pooling needs "
                          "[batch, positions, width].")
    b, length, _ = value.shape
    valid = valid_positions(mask, b, length, value.device)
    n = valid.sum(1)  # [b]
    rank = valid.long().cumsum(1) - 1  # rank of each valid position among the valid ones
    if pool.position is not None:
        want = torch.where(torch.tensor(pool.position < 0, device=value.device),
                           n + pool.position, torch.full_like(n, pool.position))
        bad = (want < 0) | (want >= n)
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise OutOfRange(f"pool={pool.name!r}: example {i} of the batch has only {int(n[i])} "
                             "valid positions; pick a position every example has.")
        sel = valid & (rank == want[:, None])
    else:
        start, stop = _bounds(pool.start, n, 0), _bounds(pool.stop, n, None)
        sel = valid & (rank >= start[:, None]) & (rank < stop[:, None])
    count = sel.sum(1)
    if (count == 0).any():
        i = int((count == 0).nonzero()[0, 0])
        raise OutOfRange(f"pool={pool.name!r} selects no position of example {i} of the batch "
                         f"({int(n[i])} valid positions); widen the range or use 'mean'.")
    x = value.float()
    return (x * sel[..., None]).sum(1) / count[:, None].to(x.dtype) if pool.position is None \
        else x[sel]  # exactly one position per row: no arithmetic on it


def _bounds(v: int | None, n: torch.Tensor, default: int | None) -> torch.Tensor:
    """Slice bound ``v`` resolved per row for ``n`` valid positions (Python slice rules)."""
    if v is None:
        return torch.zeros_like(n) if default == 0 else n.clone()
    out = n + v if v < 0 else torch.full_like(n, v)
    return torch.minimum(out.clamp(min=0), n)
