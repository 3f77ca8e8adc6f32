"""Sign-flip interventions in the live forward pass (generation with the KV cache included).

>>> with bd.sign_flip(model, cat["fruit"], mode="away") as flip:
...     out = model.generate(**inputs, max_new_tokens=30)
>>> with bd.sign_flip(model, cat["fruit"], control="random"):   # magnitude-matched random dims
...     ...

Modes, on the feature's dims ``D`` with prototype signs ``P`` (``x`` = the site's value):

- ``away``:   dims whose sign agrees with ``P`` become ``-strength * x`` (the concept is pushed out);
- ``toward``: dims whose sign disagrees with ``P`` become ``-strength * x``;
- ``set``:    every dim becomes ``strength * |x| * P`` (signs forced, magnitudes kept).

Positions: ``"all"``; ``"last"`` (the last real token of each row, left or right padding, and every
decode step); an ``int`` or a ``slice`` of indices into the padded input as the user sees it (a
decode step's token has index ``attention_mask.shape[1] - 1``); a boolean mask ``[batch, seq]`` over
the prompt (decode steps are not touched).

Controls (``control=``) replace the feature's dims by others at the same site, with as many dims:

- ``"disjoint"``: dims drawn uniformly outside every given feature;
- ``"random"``: dims outside the features whose mean ``|x|`` matches the feature dims': each
  feature dim, in random order, takes the unused outside dim nearest in mean ``|x|``;
- a :class:`Feature` (an unrelated concept): that feature is flipped instead.

For ``"random"`` and ``"disjoint"`` the magnitudes and the control's prototype signs (the sign of
each chosen dim's mean value) come from ``reference`` (``{site: [n, width] states}``) or, when
none is given, from the first forward pass through the site (the prompt); so ``away`` negates
the control dims wherever they hold their usual sign, as the feature's dims are in a context that
elicits the feature.

One hook per site module (features at several sites at once), a model-level pre-hook reads the
attention mask when positions need it; all are removed on exit, also when the block raises.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from bagofdims.hooks import HookSet, active_objects
from bagofdims.features.feature import Feature
from bagofdims.sites import Site, resolve
from bagofdims.errors import HookError, InvalidArgument, InvalidType, NotFound, OutOfRange

MODES = ("away", "toward", "set")
CONTROLS = (None, "random", "disjoint")


@dataclass
class _SiteFlip:
    """What one site's hook applies: dims, prototype signs (±1 floats), and bookkeeping."""

    site: Site
    dims: torch.Tensor  # int64 [n]
    signs: torch.Tensor  # float [n], ±1
    exclude: torch.Tensor  # int64: dims a control must avoid (every feature dim at this site)
    pending: int = 0  # control dims still to draw on the first pass (0: ready)
    calls: int = 0  # forward passes this site was modified in
    touched: int = 0  # values changed, summed over passes


def _positions_mask(positions, ctx: dict, b: int, s: int, device) -> torch.Tensor | None:
    """Boolean ``[b, s]`` of the positions to modify in this pass (``None``: all of them)."""
    if isinstance(positions, str) and positions == "all":
        return None
    mask = ctx.get("attention_mask")
    total = mask.shape[1] if mask is not None and mask.dim() == 2 else ctx.get("past", 0) + s
    offset = total - s  # absolute index of this chunk's first token (decode steps: past length)
    idx = torch.arange(offset, offset + s, device=device)
    if isinstance(positions, str):  # "last"
        if s == 1:
            return torch.ones(b, 1, dtype=torch.bool, device=device)
        if mask is not None and mask.dim() == 2:
            ar = torch.arange(mask.shape[1], device=device)
            last = (mask.to(device).bool() * (ar + 1)).argmax(-1)  # last real token per row
        else:
            last = torch.full((b,), total - 1, device=device)
        return idx[None, :] == last[:, None]
    if isinstance(positions, int):
        want = positions if positions >= 0 else total + positions
        if offset == 0 and not 0 <= want < total:
            raise OutOfRange(f"positions={positions} is outside the {total} positions of this input; "
                             f"use an index in -{total}..{total - 1}.")
        return (idx == want)[None, :].expand(b, s)
    if isinstance(positions, slice):
        sel = torch.zeros(total, dtype=torch.bool, device=device)
        sel[positions] = True
        if offset == 0 and not sel.any():
            raise OutOfRange(f"positions={positions} selects none of the {total} positions of this "
                             "input; use a slice that overlaps it.")
        return sel[offset:][None, :].expand(b, s)
    # boolean mask over the prompt
    pm = positions.to(device=device, dtype=torch.bool)
    if offset == 0 and tuple(pm.shape) != (b, s):
        raise InvalidArgument(f"The positions mask has shape {tuple(pm.shape)} but the input is "
                              f"[batch={b}, seq={s}]; pass a boolean mask of exactly that shape.")
    out = torch.zeros(b, s, dtype=torch.bool, device=device)
    lo, hi = offset, min(offset + s, pm.shape[1])
    if hi > lo:
        out[:, : hi - lo] = pm[:, lo:hi]
    return out


def _check_positions(positions) -> None:
    if isinstance(positions, str):
        if positions not in ("all", "last"):
            raise InvalidArgument(f"positions='{positions}': use 'all', 'last', an int, a slice, or a "
                             "boolean mask [batch, seq].")
    elif isinstance(positions, torch.Tensor):
        if positions.dtype != torch.bool or positions.dim() != 2:
            raise InvalidArgument("A positions mask must be a boolean tensor [batch, seq].")
    elif not isinstance(positions, (int, slice)):
        raise InvalidType(f"positions must be 'all', 'last', int, slice or a bool mask, not "
                        f"{type(positions).__name__}.")


def flip_values(x: torch.Tensor, dims: torch.Tensor, signs: torch.Tensor, mode: str,
                strength: float = 1.0, where: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Apply a mode to ``x[..., dims]`` (``x`` is ``[b, s, w]``); returns (new tensor, #changed).

    ``where``: optional boolean ``[b, s]`` of the positions to modify.
    """
    sub = x[..., dims]
    p = signs.to(sub.dtype)
    if mode == "set":
        new = strength * sub.abs() * p
        change = torch.ones_like(sub, dtype=torch.bool)
    else:
        agree = (sub * p) > 0
        change = agree if mode == "away" else (sub * p) < 0
        new = torch.where(change, -strength * sub, sub)
    if where is not None:
        change = change & where[..., None]
        new = torch.where(where[..., None], new, sub)
    out = x.clone()
    out[..., dims] = new
    return out, int(change.sum())


class SignFlip:
    """Handle of an active sign flip (returned by :func:`sign_flip`); also its context manager.

    Attributes after use: ``calls[site]`` (forward passes modified), ``touched[site]`` (values
    changed), ``dims(site)`` (the dims actually flipped, controls resolved).
    """

    def __init__(self, model: nn.Module, features, mode: str = "away", strength: float = 1.0,
                 positions="all", control=None, seed: int = 0, reference: dict | None = None,
                 any_thread: bool = False):
        if mode not in MODES:
            raise InvalidArgument(f"mode='{mode}': use one of {MODES}.")
        if isinstance(control, str) and control not in CONTROLS:
            raise InvalidArgument(f"control='{control}': use None, 'random', 'disjoint', or a Feature "
                             "(an unrelated concept).")
        if not (isinstance(control, (str, Feature)) or control is None):
            raise InvalidType("control must be None, 'random', 'disjoint' or a Feature.")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not \
                math.isfinite(strength) or strength < 0:
            raise InvalidArgument(f"strength={strength!r}: pass a finite number >= 0 (the mode "
                                  "gives the direction; 1 is a pure sign flip).")
        _check_positions(positions)
        features = [features] if isinstance(features, Feature) else list(features)
        if not features or not all(isinstance(f, Feature) for f in features):
            raise InvalidType("features must be a Feature or a non-empty list of Features.")
        self.model, self.features, self.mode = model, features, mode
        self.strength, self.positions, self.control = float(strength), positions, control
        self.seed, self.reference = seed, reference or {}
        self.any_thread = any_thread
        self._hooks: HookSet | None = None
        self._ctx: dict = {}
        self._flips = self._plan()

    # -- planning -------------------------------------------------------------------------------
    def _plan(self) -> dict[tuple[str, str], list[_SiteFlip]]:
        own = self.control if isinstance(self.control, Feature) else None
        flipped = [own] if own is not None else self.features
        by_site: dict[str, list[Feature]] = defaultdict(list)
        for f in flipped:
            by_site[f.site].append(f)
        sites = {s.name: s for s in resolve(self.model, list(by_site))}
        plan: dict[tuple[str, str], list[_SiteFlip]] = defaultdict(list)
        for name, feats in by_site.items():
            site = sites[name]
            dims = torch.cat([f.dims for f in feats])
            signs = torch.cat([f.signs for f in feats]).float()
            keep = _first_occurrence(dims)  # a dim shared by two features is flipped once
            dims, signs = dims[keep], signs[keep]
            exclude = torch.cat([f.dims for f in self.features if f.site == name] + [dims]).unique()
            sf = _SiteFlip(site, dims, signs, exclude)
            if self.control in ("random", "disjoint"):
                sf.pending = len(dims)
                if name in self.reference:
                    self._draw_control(sf, self.reference[name])
            plan[(site.module_path, site.on)].append(sf)
        return plan

    def _draw_control(self, sf: _SiteFlip, ref: torch.Tensor) -> None:
        """Pick the control dims from reference states ``[..., width]`` (see module docstring)."""
        ref = ref.detach().float().reshape(-1, ref.shape[-1])
        width, n = ref.shape[-1], sf.pending
        g = torch.Generator().manual_seed(self.seed)
        outside = torch.ones(width, dtype=torch.bool)
        outside[sf.exclude.cpu()] = False
        cand = outside.nonzero().squeeze(-1)
        if len(cand) < n:
            raise InvalidArgument(f"site {sf.site.name}: {n} control dims needed but only {len(cand)} "
                             "dims lie outside the features; use a smaller feature.")
        mag = ref.abs().mean(0).cpu()
        if self.control == "disjoint":
            chosen = cand[torch.randperm(len(cand), generator=g)[:n]]
        else:
            # Nearest unused outside dim in mean |x| for each feature dim, in random order; a
            # setup step over n dims, not a hot path.
            target = mag[sf.dims.cpu()][torch.randperm(n, generator=g)]
            jitter = torch.rand(len(cand), generator=g) * 1e-6  # random tie-breaking
            free = torch.ones(len(cand), dtype=torch.bool)
            picks = []
            for t in target.tolist():
                dist = (mag[cand] - t).abs() + jitter
                dist[~free] = float("inf")
                j = int(dist.argmin())
                free[j] = False
                picks.append(j)
            chosen = cand[torch.as_tensor(picks, dtype=torch.int64)]
        mean = ref.mean(0).cpu()[chosen]
        sf.dims = chosen
        sf.signs = torch.where(mean >= 0, 1.0, -1.0)
        sf.pending = 0

    # -- hooks ----------------------------------------------------------------------------------
    def _apply(self, sf: _SiteFlip, value: torch.Tensor) -> torch.Tensor:
        """New site tensor for one pass, or ``value`` itself when nothing is flipped."""
        x = value
        if sf.pending:
            self._draw_control(sf, x)
        if len(sf.dims) == 0:
            return value
        if x.dim() == 2:  # [tokens, width] (e.g. an unbatched call): one row per position
            x = x[None]
        where = _positions_mask(self.positions, self._ctx, x.shape[0], x.shape[1], x.device)
        dev = sf.dims.device
        if dev != x.device:
            sf.dims, sf.signs = sf.dims.to(x.device), sf.signs.to(x.device)
        new, changed = flip_values(x, sf.dims, sf.signs, self.mode, self.strength, where)
        sf.calls += 1
        sf.touched += changed
        return new.reshape(value.shape)

    def _make_hook(self, group: list[_SiteFlip], on_input: bool):
        site = group[0].site

        def rewrite(value):
            whole = value[0] if isinstance(value, (tuple, list)) else value
            x = site.select(whole)
            for sf in group:
                x = self._apply(sf, x)
            new = _put_back(site, whole, x)
            if isinstance(value, tuple):
                return (new, *value[1:])
            if isinstance(value, list):
                return [new, *value[1:]]
            return new

        if on_input:
            def hook(module, args, kwargs):
                if args:
                    return (rewrite(args[0]), *args[1:]), kwargs
                kwargs = dict(kwargs, hidden_states=rewrite(kwargs["hidden_states"]))
                return args, kwargs
        else:
            def hook(module, args, output):
                return rewrite(output)
        return hook

    def _context_hook(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        self._ctx = {"attention_mask": mask}
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if mask is None and cache is not None and hasattr(cache, "get_seq_length"):
            self._ctx["past"] = int(cache.get_seq_length())

    # -- context management ---------------------------------------------------------------------
    def __enter__(self) -> "SignFlip":
        if self.active:
            raise HookError("This sign flip is already active; create another to nest flips.")
        hooks = HookSet(self.model, f"sign_flip:{self.mode}", self, any_thread=self.any_thread)
        if not (isinstance(self.positions, str) and self.positions == "all"):
            hooks.add("", self._context_hook, "model_input", "context")
        for (path, on), group in self._flips.items():
            hooks.add(path, self._make_hook(group, on == "input"), on,
                      ",".join(sf.site.name for sf in group))
        self._hooks = hooks.attach()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return False

    def remove(self) -> None:
        """Detach every hook of this flip (idempotent)."""
        if self._hooks is not None:
            self._hooks.detach()
            self._hooks = None
        self._ctx = {}

    @property
    def active(self) -> bool:
        return self._hooks is not None and self._hooks.active

    @property
    def calls(self) -> dict[str, int]:
        return {sf.site.name: sf.calls for g in self._flips.values() for sf in g}

    @property
    def touched(self) -> dict[str, int]:
        return {sf.site.name: sf.touched for g in self._flips.values() for sf in g}

    def dims(self, site: str) -> torch.Tensor:
        """The dims flipped at ``site`` (for controls: drawn on the first pass)."""
        for g in self._flips.values():
            for sf in g:
                if sf.site.name == site:
                    if sf.pending:
                        raise RuntimeError("Control dims are drawn on the first forward pass; run "
                                           "the model first or pass reference=.")
                    return sf.dims.cpu()
        raise NotFound(f"No flip at site '{site}'; this flip covers {sorted(self.calls)}.")

    def __repr__(self) -> str:
        names = [f.name for f in self.features]
        ctrl = f", control={self.control if isinstance(self.control, str) else self.control.name!r}" \
            if self.control is not None else ""
        state = "active" if self.active else "inactive"
        return (f"SignFlip({names}, mode={self.mode}, strength={self.strength}, "
                f"positions={self.positions if not isinstance(self.positions, torch.Tensor) else 'mask'}"
                f"{ctrl}, {state})")


def _first_occurrence(dims: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each value of ``dims``, in order."""
    if len(dims) == 0:
        return torch.zeros(0, dtype=torch.int64)
    uniq, inv = torch.unique(dims, return_inverse=True)
    first = torch.full((len(uniq),), len(dims), dtype=torch.int64)
    first.scatter_reduce_(0, inv, torch.arange(len(dims)), reduce="amin")
    return first.sort().values


def _put_back(site: Site, whole: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Inverse of :meth:`Site.select`: the module's tensor with the site's part replaced by ``x``."""
    if x is whole:
        return whole
    if site.kind in ("k", "v") and whole.dim() == 4:
        if site.heads_first:  # [b, heads, s, hd] was transposed to [b, s, heads*hd]
            return x.unflatten(-1, (whole.shape[1], whole.shape[3])).transpose(1, 2)
        return x.unflatten(-1, whole.shape[-2:])
    if site.part is not None:
        chunks = list(whole.chunk(site.parts, dim=-1))
        if x is chunks[site.part]:
            return whole
        chunks[site.part] = x
        return torch.cat(chunks, dim=-1)
    return x


def sign_flip(model: nn.Module, features, mode: str = "away", strength: float = 1.0,
              positions="all", control=None, seed: int = 0,
              reference: dict | None = None, any_thread: bool = False) -> SignFlip:
    """Context manager flipping feature signs in every forward pass inside the ``with`` block.

    Args:
        model: the HF model that will be called (or whose ``generate`` will be).
        features: one :class:`Feature` or a list (several sites allowed).
        mode: ``"away"``, ``"toward"`` or ``"set"`` (see the module docstring).
        strength: magnitude factor of the flipped values (1: pure sign flip).
        positions: ``"all"``, ``"last"``, an int, a slice, or a boolean mask ``[batch, seq]``.
        control: ``None``, ``"random"`` (magnitude-matched dims), ``"disjoint"`` (random dims
            outside the features) or a :class:`Feature` (an unrelated concept, flipped instead).
        seed: seed of the control dims.
        reference: ``{site: states [..., width]}`` to draw control dims from (default: the first
            forward pass).
        any_thread: also flip passes run by other threads (e.g. ``generate`` in a streaming
            thread); by default only the thread that entered the block is affected.
    """
    return SignFlip(model, features, mode, strength, positions, control, seed, reference,
                    any_thread)


def active_interventions(model: nn.Module) -> list[SignFlip]:
    """The sign flips whose hooks are attached to ``model`` right now, in attachment order."""
    return active_objects(model, SignFlip)
