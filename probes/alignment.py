"""How axis-aligned is a trained probe? Compare its weights with a sign prototype (dims + signs).

A prototype for category j is a set of dimensions D_j and a sign pattern pi_j in {+1, -1}.
Prototypes can be given as
- two parallel per-category sequences: dims (row ids into the weights) and signs (±1 or bool),
- a list of objects with `.dims` and `.signs` attributes (e.g. feature records), or
- one dense [d, k] matrix with entries in {-1, 0, +1} (0 = not in the prototype), signs=None.
For an MLP probe use its mean input gradients (`MLPProbe.input_gradients(X)`) as the weights.

Sign agreement and |w| share alone cannot show that a probe is *axis*-aligned: the prototype's
dims are chosen as the category's most discriminative dims, so any good probe leans on them in
any basis. `rotated_basis` builds the control: the states rotated by a Haar-random orthogonal R,
the prototypes found again in that basis the same way (per-dim sign AUC on the anchors, same
rule), so the same probe trained there can be measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from bagofdims.errors import InvalidArgument, InvalidType
from bagofdims.features.discovery import DiscoveryConfig, discover_rows
from bagofdims.signs import bits
from bagofdims.stats import random_rotation


def _weights_2d(weights: torch.Tensor) -> tuple[torch.Tensor, bool]:
    w = torch.as_tensor(weights)
    if w.ndim == 1:
        return w[:, None], True
    if w.ndim != 2:
        raise InvalidArgument(f"weights must be [d] or [d, k]; got shape {tuple(w.shape)}")
    return w, False


def _flatten(
    proto_dims,
    proto_signs,
    d: int,
    k: int,
    single: bool,
    device,
    need_signs: bool = True,
):
    """(dims, signs, column) of every prototype entry as flat tensors (signs None if not needed)."""
    if (
        isinstance(proto_dims, torch.Tensor) and proto_dims.ndim == 2
    ):  # dense {-1, 0, +1} matrix
        P = proto_dims.to(device)
        if tuple(P.shape) != (d, k):
            raise InvalidArgument(
                f"dense prototype matrix must be [d, k] = {(d, k)}; got {tuple(P.shape)}"
            )
        dims, cols = P.nonzero(as_tuple=True)
        return dims, torch.sign(P[dims, cols].float()), cols
    items = [proto_dims] if single else list(proto_dims)
    if single and proto_signs is not None:
        proto_signs = [proto_signs]
    if items and hasattr(items[0], "dims"):  # objects carrying .dims and .signs
        proto_signs = (
            [getattr(it, "signs", None) for it in items]
            if proto_signs is None
            else proto_signs
        )
        items = [it.dims for it in items]
    if proto_signs is None or any(s_ is None for s_ in proto_signs):
        if need_signs:
            raise InvalidType(
                "give proto_signs, objects with .dims/.signs, or a dense [d, k] sign matrix"
            )
        proto_signs = [None] * len(items)
    if len(items) != k or len(proto_signs) != k:
        raise InvalidArgument(
            f"{len(items)} prototype dim sets / {len(proto_signs)} sign sets for {k} weight columns"
        )
    dims_l, signs_l, cols_l = [], [], []
    for j, (D, S) in enumerate(zip(items, proto_signs)):
        D = torch.as_tensor(D, dtype=torch.long, device=device).flatten()
        if D.numel() and (D.min() < 0 or D.max() >= d):
            raise InvalidArgument(f"category {j}: prototype dims must lie in [0, {d})")
        if S is None:
            S = torch.ones(D.numel(), device=device)
        S = torch.as_tensor(S, device=device).flatten()
        if D.numel() != S.numel():
            raise InvalidArgument(f"category {j}: {D.numel()} dims but {S.numel()} signs")
        S = (
            torch.where(S, 1.0, -1.0)
            if S.dtype == torch.bool
            else torch.sign(S.float())
        )
        if (S == 0).any():
            raise InvalidArgument(
                f"category {j}: prototype signs must be ±1 (or bool), found 0"
            )
        dims_l.append(D)
        signs_l.append(S)
        cols_l.append(torch.full_like(D, j))
    return torch.cat(dims_l), torch.cat(signs_l), torch.cat(cols_l)


def _per_column(values: torch.Tensor, cols: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(k, dtype=torch.float64, device=values.device).index_add_(
        0, cols, values.double()
    )


def sign_agreement(weights, proto_dims, proto_signs=None) -> torch.Tensor:
    """Per category, the fraction of the prototype's dims where sign(w) equals the prototype sign.

    weights: [d, k] (or [d] with a single prototype). Returns float64 [k] (scalar for [d]);
    NaN for an empty prototype. A zero weight counts as disagreement.
    """
    w, single = _weights_2d(weights)
    d, k = w.shape
    dims, signs, cols = _flatten(proto_dims, proto_signs, d, k, single, w.device)
    agree = (torch.sign(w[dims, cols].float()) == signs).double()
    count = _per_column(torch.ones_like(agree), cols, k)
    out = _per_column(agree, cols, k) / count
    return out[0] if single else out


def mass_on_dims(weights, proto_dims) -> torch.Tensor:
    """Per category, the share of sum |w| that sits on the prototype's dims (chance = |D| / d).

    Use standardised-unit weights (`LogisticProbe.weights_std`) to compare dims of different
    scale. proto_dims: per-category dim sets, objects with `.dims`, or a dense [d, k] matrix.
    """
    w, single = _weights_2d(weights)
    d, k = w.shape
    dims, _, cols = _flatten(proto_dims, None, d, k, single, w.device, need_signs=False)
    a = w.abs().double()
    out = _per_column(a[dims, cols], cols, k) / a.sum(0)
    return out[0] if single else out


@dataclass
class AxisAlignment:
    """Alignment of trained weights with sign prototypes, one entry per category."""

    sign_agreement: (
        torch.Tensor
    )  # [k] fraction of prototype dims with matching weight sign
    mass_on_dims: torch.Tensor  # [k] share of |w| on the prototype dims
    chance_mass: (
        torch.Tensor
    )  # [k] |D_j| / d, the share a weight vector blind to D_j would put there
    n_dims: torch.Tensor  # [k] prototype sizes


def mlp_weights(probe, X) -> torch.Tensor:
    """A fitted MLPProbe's mean input gradients on ``X`` w.r.t. its standardised inputs
    ([d, k] or [d]): the MLP's counterpart of a logistic probe's standardised weights."""
    g = probe.input_gradients(X)  # input units; times the scale = standardised units
    sc = probe._std.scale
    return g * (sc[:, None] if g.ndim == 2 else sc)


def axis_alignment(
    probe_or_weights, proto_dims, proto_signs=None, X=None
) -> AxisAlignment:
    """Both measures at once. Accepts a weight tensor [d, k], a fitted LogisticProbe (its
    standardised weights) or a fitted MLPProbe (mean input gradients on X, which is required)."""
    if isinstance(probe_or_weights, torch.Tensor):
        w = probe_or_weights
    elif hasattr(probe_or_weights, "input_gradients"):
        if X is None:
            raise InvalidArgument(
                "an MLP probe's alignment uses its mean input gradients: pass X"
            )
        w = mlp_weights(probe_or_weights, X)
    elif hasattr(probe_or_weights, "weights_std"):
        w = probe_or_weights.weights_std
    else:
        raise InvalidType("expected a weight tensor, a LogisticProbe or an MLPProbe")
    w2, single = _weights_2d(w)
    d, k = w2.shape
    dims, _, cols = _flatten(proto_dims, proto_signs, d, k, single, w2.device)
    n_dims = _per_column(torch.ones_like(dims, dtype=torch.float64), cols, k)
    sq = (lambda t: t[0]) if single else (lambda t: t)
    return AxisAlignment(
        sign_agreement=sign_agreement(w, proto_dims, proto_signs),
        mass_on_dims=mass_on_dims(w, proto_dims),
        chance_mass=sq(n_dims / d),
        n_dims=sq(n_dims),
    )


@dataclass
class RotatedBasis:
    """The rotation control's inputs: rotated states, their packed signs and the prototypes
    found in the rotated basis (one per anchor set)."""

    rotation: torch.Tensor  # [d, d] orthogonal; rotated states = states @ rotation
    states: torch.Tensor  # [n, d]
    packed: torch.Tensor  # [n, ceil(d / 8)] uint8 signs of the rotated states
    dims: list[torch.Tensor]
    signs: list[torch.Tensor]  # ±1 per dim


def rotated_basis(states, anchor_rows, config: DiscoveryConfig | None = None, seed: int = 0
                  ) -> RotatedBasis:
    """Rotate ``states`` [n, d] by a Haar-random R (``bagofdims.stats.random_rotation(d, seed)``)
    and discover each anchor set's prototype there with ``config`` (the catalog's rule: per-dim
    sign AUC of the anchors vs every other row, then top-k / tau / null)."""
    x = torch.as_tensor(states)
    if x.ndim != 2 or not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise InvalidArgument("states must be a finite float [n, d] tensor (raw states, not "
                              f"packed signs); got {tuple(x.shape)} {x.dtype}")
    if not len(anchor_rows):
        raise InvalidArgument("anchor_rows is empty: give one tensor of anchor rows per category")
    d = x.shape[1]
    R = random_rotation(d, seed=seed, dtype=torch.float32)
    xr = x.float() @ R.to(x.device)
    packed = bits.pack_signs(xr)
    found = discover_rows(packed, d, [torch.as_tensor(a, dtype=torch.long) for a in anchor_rows],
                          config or DiscoveryConfig())
    return RotatedBasis(rotation=R, states=xr, packed=packed, dims=[f[0] for f in found],
                        signs=[f[1].to(torch.float32) for f in found])
