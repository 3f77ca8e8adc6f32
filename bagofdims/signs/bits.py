"""Packed sign bits and Hamming agreement kernels (CPU and GPU).

Bit order (stable file format): bit ``i`` of a row is ``value[i] > 0`` (zero and negative values
give 0), stored in byte ``i // 8`` at bit position ``i % 8``, least significant bit first. This
is exactly ``numpy.packbits(x > 0, axis=-1, bitorder="little")``. A row of width ``d`` takes
``ceil(d / 8)`` bytes; padding bits written by :func:`pack_signs` are 0 and every kernel here
ignores them, whatever their value.

Agreement between two rows is the number of the first ``d`` dimensions whose signs match. The
kernels compute it from ±1 matrix products, which are exact: ±1 is exact in bf16/fp16, products
accumulate in fp32, and every partial sum is an integer of magnitude ≤ d (fp16 output is exact
for d ≤ 2048, fp32 output for d < 2**24). On CPU the product runs in plain fp32 (lowering
torch's process-wide fp32 matmul precision for speed would also lower other threads' unrelated
products); on CUDA it runs in fp16. An XOR + popcount reference (:func:`agreement_popcount`)
checks them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from bagofdims.errors import InvalidArgument, InvalidType

__all__ = [
    "BIT_ORDER",
    "packed_width",
    "pack_signs",
    "has_nan",
    "unpack_signs",
    "popcount",
    "agreement",
    "agreement_popcount",
    "check_packed",
    "tail_mask",
    "matmul_dtype",
    "masked_agreement",
    "feature_matrix",
    "feature_masks",
    "feature_scores",
]

BIT_ORDER = "little"  # recorded in cache metadata; see the module docstring

_SHIFTS = torch.arange(8, dtype=torch.uint8)
_NUMPY_DTYPES = {torch.float16, torch.float32, torch.float64, torch.bool, torch.uint8, torch.int8,
                 torch.int16, torch.int32, torch.int64}
_SIGN_TABLE = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1) * 2 - 1  # [256, 8] of ±1
_POPCOUNT_LUT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.uint8)


def packed_width(d: int) -> int:
    """Bytes per packed row of ``d`` sign bits."""
    return (d + 7) // 8


def pack_signs(x: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Pack ``x > 0`` along the last dim into ``uint8 [..., ceil(d/8)]`` on ``x``'s device.

    ``check``: refuse NaN (whose sign is undefined); pass ``False`` only where the caller has
    already checked the values.
    """
    if check and x.is_floating_point() and has_nan(x):
        raise InvalidArgument(
            "pack_signs: input contains NaN, whose sign is undefined; drop those rows or replace "
            "NaN first (e.g. torch.nan_to_num(x)) before packing."
        )
    if x.device.type == "cpu":
        # numpy writes the same bytes several times faster than torch here: its compare is
        # vectorised where torch's bool-output x > 0 is not, and packbits beats a shift-and-sum
        positive = x.detach().resolve_neg().numpy() > 0 if x.dtype in _NUMPY_DTYPES else \
            (x > 0).numpy()
        return torch.from_numpy(np.packbits(positive, axis=-1, bitorder=BIT_ORDER))
    return _pack_on_device(x > 0)


def _pack_on_device(positive: torch.Tensor) -> torch.Tensor:
    """The bit packing of a bool tensor in torch, on its own device (GPUs)."""
    d = positive.shape[-1]
    nbytes = packed_width(d)
    bits = positive.to(torch.uint8)
    if nbytes * 8 != d:
        bits = torch.nn.functional.pad(bits, (0, nbytes * 8 - d))
    bits = bits.reshape(*positive.shape[:-1], nbytes, 8)
    return (bits << _SHIFTS.to(positive.device)).sum(-1, dtype=torch.uint8)


def has_nan(x: torch.Tensor) -> bool:
    """Whether a float tensor holds a NaN; one cheap sum decides unless it is not finite."""
    total = x.sum(dtype=torch.promote_types(x.dtype, torch.float32))  # NaN anywhere: NaN
    return not bool(torch.isfinite(total)) and bool(torch.isnan(x).any())


def unpack_signs(packed: torch.Tensor, d: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Unpack ``uint8 [..., B]`` into ±1 of ``dtype``, shape ``[..., d]`` (padding dropped)."""
    check_packed(packed, d, "packed")
    # one table lookup per byte (256 x 8 table of ±1) is ~3x faster than shift/and/scale
    table = _SIGN_TABLE.to(device=packed.device, dtype=dtype)
    out = torch.nn.functional.embedding(packed.long(), table) if dtype.is_floating_point \
        else table[packed.long()]
    out = out.reshape(*packed.shape[:-1], packed.shape[-1] * 8)
    return out if d == out.shape[-1] else out[..., :d].contiguous()


def popcount(t: torch.Tensor) -> torch.Tensor:
    """Number of set bits in each element of an integer tensor, as ``uint8`` of ``t``'s shape.

    Any integer dtype works (uint8, int16, int32, int64; two's complement for negatives). Counts
    are at most 64, so uint8 holds them; ``.sum()`` promotes to int64.
    """
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InvalidType(f"popcount needs an integer tensor, got {t.dtype}; pack bits first.")
    width = t.element_size()
    as_bytes = t.contiguous().view(torch.uint8)
    counts = _POPCOUNT_LUT.to(t.device)[as_bytes.long()]
    if width == 1:
        return counts
    return counts.reshape(*t.shape, width).sum(-1, dtype=torch.uint8)


def check_packed(t: torch.Tensor, d: int, name: str) -> None:
    if t.dtype != torch.uint8:
        raise InvalidType(f"{name} must be uint8 packed signs (see pack_signs), got {t.dtype}.")
    if d < 0 or t.shape[-1] != packed_width(d):
        raise InvalidArgument(
            f"{name} has {t.shape[-1]} bytes per row but d={d} needs {packed_width(d)}; "
            "pass the unpacked width d the rows were packed from."
        )


def tail_mask(d: int, device: torch.device) -> torch.Tensor:
    """Per-byte mask that keeps only the first d bits of a packed row."""
    mask = torch.full((packed_width(d),), 0xFF, dtype=torch.uint8, device=device)
    if d % 8:
        mask[-1] = (1 << (d % 8)) - 1
    return mask


def matmul_dtype(device: torch.device, d: int) -> torch.dtype:
    if device.type == "cuda" and d <= 2048:
        return torch.float16  # integers up to 2048 are exact in fp16
    return torch.float32


def agreement_popcount(a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """Reference kernel: XOR + popcount. ``int32 [n, m]``; padding bits are masked off."""
    check_packed(a, d, "a")
    check_packed(b, d, "b")
    mask = tail_mask(d, a.device)
    a = a & mask
    b = b & mask
    n, m = a.shape[0], b.shape[0]
    out = torch.empty((n, m), dtype=torch.int32, device=a.device)
    rows = max(1, (1 << 24) // max(1, m * a.shape[1]))  # bound the [rows, m, B] temporary
    for i in range(0, n, rows):
        diff = popcount(a[i : i + rows, None, :] ^ b[None, :, :]).sum(-1, dtype=torch.int32)
        out[i : i + rows] = d - diff
    return out


def _dots(q_pm: torch.Tensor, k_pm: torch.Tensor) -> torch.Tensor:
    """±1 dot products; exact (see module docstring). Plain fp32: the process-wide
    ``set_float32_matmul_precision`` switch would also lower other threads' products."""
    return q_pm @ k_pm.T


def agreement(a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """Agreeing sign bits among the first ``d`` of every pair: ``int32 [n, m]``.

    Computed with a ±1 matrix product on ``a``'s device (see the module docstring).
    """
    check_packed(a, d, "a")
    check_packed(b, d, "b")
    dt = matmul_dtype(a.device, d)
    dots = _dots(unpack_signs(a, d, dt), unpack_signs(b, d, dt))
    return ((dots.float() + d) * 0.5).to(torch.int32)


def masked_agreement(
    x: torch.Tensor, masks: torch.Tensor, patterns: torch.Tensor, d: int | None = None
) -> torch.Tensor:
    """Agreements of packed states ``x [n, B]`` with each feature, restricted to its mask.

    ``masks`` and ``patterns`` are packed ``[k, B]`` (see :func:`feature_masks`); returns
    ``int32 [n, k]``: for feature j, the number of dims in mask j where x's sign equals
    pattern j's sign. ``d`` defaults to ``8 * B`` (padding bits of the masks are 0 anyway).
    """
    d = 8 * x.shape[-1] if d is None else d
    for name, t in (("x", x), ("masks", masks), ("patterns", patterns)):
        check_packed(t, d, name)
    if masks.shape != patterns.shape:
        raise InvalidArgument(f"masks {tuple(masks.shape)} and patterns {tuple(patterns.shape)} differ.")
    m01 = unpack_signs(masks, d, torch.float32).add_(1).mul_(0.5)  # 0/1
    w = (unpack_signs(patterns, d, torch.float32) * m01).T  # [d, k], ±1 on the mask, else 0
    dots = _dots(unpack_signs(x, d, torch.float32), w.T.contiguous())
    return ((dots + m01.sum(1)) * 0.5).round().to(torch.int32)


def feature_matrix(
    features: Sequence[tuple[Sequence[int] | torch.Tensor, Sequence[int] | torch.Tensor]],
    d: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense ``[d, k]`` matrix of feature signs: ±1 on each feature's dims, 0 elsewhere.

    ``features`` is a list of ``(dims, signs)`` with signs in {+1, -1}; dims must be distinct
    within a feature and in ``[0, d)``.
    """
    dims = [torch.as_tensor(f[0], dtype=torch.long).reshape(-1) for f in features]
    signs = [torch.as_tensor(f[1]).reshape(-1) for f in features]
    for j, (di, si) in enumerate(zip(dims, signs)):
        if di.numel() != si.numel():
            raise InvalidArgument(f"feature {j}: {di.numel()} dims but {si.numel()} signs.")
    out = torch.zeros((d, len(features)), dtype=dtype)
    if not features:
        return out.to(device)
    all_dims = torch.cat(dims)
    all_signs = torch.cat([s.to(torch.float32) for s in signs])
    cols = torch.repeat_interleave(torch.arange(len(features)), torch.tensor([x.numel() for x in dims]))
    if all_dims.numel() and (all_dims.min() < 0 or all_dims.max() >= d):
        raise InvalidArgument(f"feature dims must lie in [0, {d}); check the site width d.")
    if not bool(((all_signs == 1) | (all_signs == -1)).all()):
        raise InvalidArgument("feature signs must be +1 or -1 (use sign 2*bit-1 for 0/1 bits).")
    flat = all_dims * len(features) + cols
    if torch.unique(flat).numel() != flat.numel():
        raise InvalidArgument("a feature lists the same dim twice; deduplicate its dims.")
    out.view(-1)[flat] = all_signs.to(dtype)
    return out.to(device)


def feature_masks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ``(masks, patterns)`` ``uint8 [k, B]`` from a dense ``[d, k]`` feature matrix."""
    return pack_signs((w != 0).T.to(torch.int8)), pack_signs(w.T)


def feature_scores(states: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Fraction of each feature's dims whose sign agrees: ``float32 [n, k]`` in [0, 1].

    ``states`` is ``[n, d]`` (raw values or ±1; sign convention ``value > 0``) or packed
    ``uint8 [n, B]``; ``w`` is the ``[d, k]`` matrix from :func:`feature_matrix`. A feature
    with no dims scores NaN.
    """
    d = w.shape[0]
    if states.dtype == torch.uint8:
        pm = unpack_signs(states, d, torch.float32)
    else:
        if states.shape[-1] != d:
            raise InvalidArgument(f"states have width {states.shape[-1]} but features use d={d}.")
        if states.is_floating_point() and bool(torch.isnan(states).any()):
            raise InvalidArgument("states contain NaN; replace them (torch.nan_to_num) before scoring.")
        pm = (states > 0).to(torch.float32) * 2 - 1
    wf = w.to(device=pm.device, dtype=torch.float32)
    size = (wf != 0).sum(0).to(torch.float32)
    dots = _dots(pm, wf.T.contiguous())
    return (dots + size) / (2 * size)

