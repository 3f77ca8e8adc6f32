"""Training-free readers of hidden states: feature scores, Hamming next-token readout, sign LM head.

Everything is batched and runs on the device of the states given.

- :func:`score_features`: agreement fraction of states with sign-pattern features.
- :func:`hamming_readout` / :func:`hamming_ranks`: decoder-free next-token readout. Vocabulary
  tokens are ranked by how many sign bits of their cached pattern (from a
  :class:`~bagofdims.signs.cache.SignCache`, or the unembedding rows' signs from
  :func:`unembedding_signs`) agree with the state's signs. Ties go to the lowest key row, as in
  :func:`bagofdims.signs.hamming.hamming_topk`.
- :func:`sign_lm_head`: the model's own LM head applied to the signs of the final hidden state
  (all dims, only the largest-magnitude dims, or signs scaled by a per-dim magnitude).

Inputs are checked, not coerced: NaN states (whose sign is undefined), float or bool index
tensors, and mismatched shapes raise errors that say what to pass. Nothing is cached at module
level; the functions are safe to call from many threads.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from bagofdims.checks import as_indices
from bagofdims.devices import execution_device, real_tensor
from bagofdims.signs import bits, hamming
from bagofdims.features.feature import Feature
from bagofdims.errors import InvalidArgument, InvalidType, OutOfRange

__all__ = [
    "MODES",
    "hamming_ranks",
    "hamming_readout",
    "mean_abs_scale",
    "score_features",
    "sign_lm_head",
    "unembedding_signs",
]

MODES = ("all", "top", "scaled")

# Query rows per block when scores against a whole vocabulary are materialised (int32/fp32
# [rows, V]): bounds memory at ~rows * V * 4 bytes.
_ROW_BLOCK = 256


def _check_states(states, what: str = "states") -> None:
    if not isinstance(states, torch.Tensor):
        raise InvalidType(f"{what} must be a torch.Tensor, got {type(states).__name__}; wrap it "
                          "with torch.as_tensor.")
    if states.is_complex():
        raise InvalidType(f"{what} are complex; pass real-valued states.")
    if states.is_floating_point() and bool(torch.isnan(states).any()):
        raise InvalidArgument(f"{what} contain NaN, whose sign is undefined; drop those rows or "
                              "replace NaN (torch.nan_to_num) first.")


def _as_packed(states: torch.Tensor, d: int | None = None) -> tuple[torch.Tensor, int]:
    """``(packed uint8 [n, B], d)`` from raw/±1 states ``[n, d]`` or already packed states."""
    _check_states(states)
    if states.dim() != 2:
        raise InvalidArgument(f"expected 2-D states [n, d] (or packed [n, B]), got {tuple(states.shape)}.")
    if states.dtype == torch.uint8:
        if d is None:
            raise InvalidArgument("packed uint8 states need the unpacked width d; pass d=.")
        bits.check_packed(states, d, "states")
        return states, d
    if d is not None and states.shape[-1] != d:
        raise InvalidArgument(f"states have width {states.shape[-1]} but the keys have d={d}; use "
                         "keys from the same site (or the unembedding for final states).")
    return bits.pack_signs(states), states.shape[-1]


def score_features(states: torch.Tensor, features: Sequence[Feature]) -> torch.Tensor:
    """Agreement fraction ``float32 [n, k]`` of each state with each feature (0..1).

    ``states``: ``[n, d]`` raw values or ±1 (sign convention ``value > 0``), or packed ``uint8
    [n, ceil(d/8)]``. All features must be at one width: the states' width for float states;
    for packed states their recorded ``width`` (or ``8 * B`` when none is recorded).
    """
    if not features:
        raise InvalidArgument("score_features needs at least one feature.")
    _check_states(states)
    if states.dim() != 2:
        raise InvalidArgument(f"expected 2-D states [n, d] (or packed [n, B]), got {tuple(states.shape)}.")
    empty = [f.name for f in features if len(f) == 0]
    if empty:  # its agreement fraction would be 0/0
        raise InvalidArgument(f"features {empty[:5]} have no dims and cannot be scored; drop them.")
    widths = {f.width for f in features if f.width is not None}
    if len(widths) > 1:
        raise InvalidArgument(
            f"features come from sites of different widths {sorted(widths)}; score each width's "
            "features against states of that site separately."
        )
    packed = states.dtype == torch.uint8
    if packed:
        d = widths.pop() if widths else 8 * states.shape[-1]
    else:
        d = states.shape[-1]
        if widths and widths != {d}:
            raise InvalidArgument(f"features have width {widths.pop()} but the states have width {d}; "
                             "capture the states at the features' site.")
    for f in features:
        f.check_width(d)
    w = bits.feature_matrix([(f.dims, f.signs) for f in features], d, device=states.device)
    if packed:
        bits.check_packed(states, d, "states")
    return bits.feature_scores(states, w)


def hamming_readout(
    states: torch.Tensor,
    keys_packed: torch.Tensor,
    d: int,
    k: int = 100,
    token_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` vocabulary tokens by sign agreement: ``(float32 [n, k], int64 [n, k])``.

    ``states``: ``[n, d]`` (raw or ±1) or packed ``[n, B]``. ``keys_packed``: ``[V, B]`` sign
    patterns, e.g. ``cache.packed(site)`` or :func:`unembedding_signs`. ``token_ids`` maps key
    rows to vocabulary ids (``cache.token_ids``; default: row i is token i). Scores are the
    fraction of the ``d`` dims that agree, best first; ties go to the lowest key row.
    """
    q, d = _as_packed(states, d)
    keys = keys_packed.to(q.device)
    if token_ids is not None:
        token_ids = as_indices(token_ids, "token_ids", flat=False).reshape(-1)
        if len(token_ids) != keys.shape[0]:
            raise InvalidArgument(f"token_ids has {len(token_ids)} entries but there are "
                                  f"{keys.shape[0]} key rows; pass one id per key row.")
    agree, rows = hamming.hamming_topk(q, keys, d, k)
    ids = rows if token_ids is None else token_ids.to(rows.device)[rows]
    return agree.to(torch.float32) / d, ids


def hamming_ranks(
    states: torch.Tensor,
    keys_packed: torch.Tensor,
    d: int,
    target_rows: torch.Tensor,
) -> torch.Tensor:
    """0-based rank of target key rows for each state under the Hamming readout.

    ``target_rows`` is ``[n]`` (returns ``int64 [n]``) or ``[n, t]`` (several targets per
    state, e.g. the model's prediction and the true token; returns ``[n, t]``). Same order as
    :func:`hamming_readout` (agreement, then lowest row), so a target is in the readout's top-k
    exactly when its rank is below k. A target row of -1 (token not among the keys) gets rank
    ``V`` (never found). One ±1 matrix product per block of states, no sort.
    """
    q, d = _as_packed(states, d)
    keys = keys_packed.to(q.device)
    bits.check_packed(keys, d, "keys_packed")
    t_all = as_indices(target_rows, "target_rows", flat=False).to(q.device)
    if t_all.dim() not in (1, 2):
        raise InvalidArgument(f"target_rows must be [n] or [n, t], got shape {tuple(t_all.shape)}.")
    single = t_all.dim() == 1
    t_all = t_all.reshape(t_all.shape[0], -1)
    if t_all.shape[0] != q.shape[0]:
        raise InvalidArgument(f"{q.shape[0]} states but {t_all.shape[0]} rows of targets.")
    n_keys = keys.shape[0]
    if bool(((t_all >= n_keys) | (t_all < -1)).any()):
        raise OutOfRange(f"target rows must be in 0..{n_keys - 1} (the key rows) or -1 (not among "
                         "the keys).")
    k_pm = bits.unpack_signs(keys, d, torch.float32)
    col = torch.arange(n_keys, device=q.device)
    out = torch.full_like(t_all, n_keys)
    for r0 in range(0, q.shape[0], _ROW_BLOCK):
        tb = t_all[r0 : r0 + _ROW_BLOCK]
        dots = bits._dots(bits.unpack_signs(q[r0 : r0 + _ROW_BLOCK], d, torch.float32), k_pm)
        for j in range(tb.shape[1]):  # a few target kinds, not tokens
            t = tb[:, j : j + 1]
            tgt = dots.gather(1, t.clamp(min=0))
            # ±1 dot products all have the parity of d, so they differ by 2 or more: adding 1
            # to the keys before the target ranks its ties ahead of it, and nothing else moves.
            ahead = torch.where(col < t, dots + 1, dots).gt_(tgt).sum(1)
            out[r0 : r0 + _ROW_BLOCK, j] = torch.where(t[:, 0] >= 0, ahead, n_keys)
    return out[:, 0] if single else out


def _lm_head(model):
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise InvalidArgument(f"{type(model).__name__} has no LM head (get_output_embeddings() is "
                              "None); load the model with its LM head (AutoModelForCausalLM).")
    return head


def unembedding_signs(model) -> torch.Tensor:
    """Packed signs ``uint8 [V, ceil(d/8)]`` of the LM head rows (``get_output_embeddings``)."""
    head = _lm_head(model)
    with torch.no_grad():
        return bits.pack_signs(real_tensor(head).detach())


def mean_abs_scale(states: torch.Tensor) -> torch.Tensor:
    """Per-dim mean ``|h|`` ``float32 [d]`` of reference states (the ``scaled`` mode's scale)."""
    _check_states(states, "reference states")
    if states.dim() != 2 or states.shape[0] == 0:
        raise InvalidArgument(f"expected non-empty reference states [n, d], got {tuple(states.shape)}.")
    return states.detach().abs().to(torch.float32).mean(0)


def sign_lm_head(
    model,
    states: torch.Tensor,
    mode: str = "all",
    top_frac: float | None = 0.1,
    top_k: int | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[n, V]`` of the model's LM head applied to the signs of final hidden states.

    ``states`` are ``final`` states (after the final norm, what the LM head reads) ``[n, d]``.

    - ``mode="all"``: every dim replaced by its sign (unit magnitude; exact zeros stay 0).
    - ``mode="top"``: only each state's ``top_k`` (or ``ceil(top_frac * d)``) largest-``|h|``
      dims keep their sign; the rest are zeroed.
    - ``mode="scaled"``: ``sign(h) * scale``, with ``scale`` ``[d]`` the mean ``|h|`` per dim
      estimated on reference states (:func:`mean_abs_scale`). Default: the states given
      themselves (in-sample); pass a scale from a held-out batch for an out-of-sample reading.
      Each position then keeps only its sign pattern; magnitudes come from the population.

    The LM head module is applied as is (its bias, if any, included); output softcapping of
    some models is monotone and left out, which does not change rankings.
    """
    if mode not in MODES:
        raise InvalidArgument(f"mode must be one of {MODES}, got {mode!r}.")
    head = _lm_head(model)
    _check_states(states)
    if states.dim() != 2:
        raise InvalidArgument(f"expected states [n, d], got {tuple(states.shape)}.")
    d = states.shape[-1]
    if d != head.weight.shape[1]:
        raise InvalidArgument(f"states have width {d} but the LM head reads {head.weight.shape[1]}; "
                         "pass states of the 'final' site.")
    h = states.detach().to(device=execution_device(head), dtype=torch.float32)
    s = torch.sign(h)
    if mode == "top":
        if top_k is None:
            if top_frac is None or not 0 < top_frac <= 1:
                raise InvalidArgument(f"top_frac must be in (0, 1], got {top_frac}; or pass top_k.")
            top_k = max(1, math.ceil(round(top_frac * d, 6)))
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise InvalidType(f"top_k must be an int, got {top_k!r}; or pass top_frac.")
        top_k = int(top_k)
        if not 1 <= top_k <= d:
            raise InvalidArgument(f"top_k must be between 1 and d={d}, got {top_k}.")
        idx = h.abs().topk(top_k, dim=1).indices
        s = torch.zeros_like(s).scatter_(1, idx, s.gather(1, idx))
    elif mode == "scaled":
        scale = mean_abs_scale(h) if scale is None else scale
        scale = torch.as_tensor(scale, dtype=torch.float32, device=h.device).reshape(-1)
        if scale.shape[0] != d:
            raise InvalidArgument(f"scale has {scale.shape[0]} entries but the states have d={d}.")
        if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise InvalidArgument("scale must be finite and >= 0 (a per-dim mean |h|, see "
                                  "mean_abs_scale).")
        s = s * scale
    with torch.no_grad():
        return head(s.to(head.weight.dtype))
