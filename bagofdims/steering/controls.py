"""Control distributions for sign flips: many random dim sets, one forward pass per batch of them.

Flipping any 32 dims of a residual stream moves the next-token distribution, so a feature's
flip effect means something only against the effects of many control dim sets of the same size
at the same site:

- **stratified**: for each feature dim, an outside dim drawn uniformly from the same magnitude
  stratum (equal-count bins of the outside dims' mean ``|x|`` over the prompts' real positions);
- **disjoint**: dims drawn uniformly from all dims outside the feature.

A control flips its dims away from their usual sign (the sign of the dim's mean over the same
positions), as ``away`` flips the feature's dims away from the prototype. Every condition is a
dense **pattern** ``[width]`` (the sign to flip away from on each flipped dim, 0 elsewhere):
``away`` is the feature's ``dense()``, ``toward`` its negation (negating the dims that disagree
with ``P`` is flipping away from ``-P``). :func:`pattern_masses` stacks prompts x patterns in the
batch dimension, so one forward pass evaluates many draws, and :class:`RowFlip` applies batch
row ``b``'s pattern to row ``b`` only; with one pattern it is exactly
:func:`~bagofdims.steering.interventions.sign_flip` in ``away`` mode at every position.

:func:`flip_distribution` runs one concept's feature and its controls at one site (p-values from
:mod:`bagofdims.steering.significance`); :func:`flip_matrix` flips each of several features on
every concept's prompts (specificity).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bagofdims.capture import Capture
from bagofdims.devices import input_device
from bagofdims.errors import HookError, InvalidArgument
from bagofdims.features.feature import Feature
from bagofdims.hooks import HookSet
from bagofdims.sites import resolve
from bagofdims.steering.interventions import _put_back
from bagofdims.steering.significance import permutation_p

__all__ = ["FlipDistribution", "RowFlip", "control_patterns", "disjoint_draws",
           "flip_distribution", "flip_matrix", "pattern_masses", "site_statistics",
           "stratified_draws"]


def _outside(width: int, dims: torch.Tensor) -> torch.Tensor:
    dims = torch.as_tensor(dims, dtype=torch.int64)
    if len(dims) and not 0 <= int(dims.min()) <= int(dims.max()) < width:
        raise InvalidArgument(f"feature dims {int(dims.min())}..{int(dims.max())} are out of range "
                              f"for a site of width {width}; the feature belongs to another site.")
    keep = torch.ones(width, dtype=torch.bool)
    keep[dims] = False
    return keep.nonzero().squeeze(-1)


def stratified_draws(magnitude: torch.Tensor, dims: torch.Tensor, n: int, strata: int = 10,
                     seed: int = 0) -> torch.Tensor:
    """``n`` magnitude-stratified control sets ``int64 [n, k]`` for the feature dims ``dims``.

    The dims outside the feature are cut into ``strata`` equal-count bins by ``magnitude``
    (mean ``|x|`` per dim; fewer bins when a bin would hold fewer than ``k`` dims); each feature
    dim is replaced by a dim drawn without replacement from its own bin.
    """
    magnitude = torch.as_tensor(magnitude, dtype=torch.float64).cpu()
    dims = torch.as_tensor(dims, dtype=torch.int64).cpu()
    out = _outside(len(magnitude), dims)
    k = len(dims)
    if k == 0:
        return torch.zeros(n, 0, dtype=torch.int64)
    if len(out) < k:
        raise InvalidArgument(f"{k} control dims needed but only {len(out)} dims lie outside the "
                              "feature; use a smaller feature.")
    bins = max(1, min(strata, len(out) // k))
    ranked = out[magnitude[out].argsort(stable=True)]
    bin_of_rank = torch.arange(len(ranked)) * bins // len(ranked)
    upper = torch.stack([magnitude[ranked[bin_of_rank == b]].max() for b in range(bins)])
    own_bin = torch.searchsorted(upper, magnitude[dims]).clamp(max=bins - 1)
    g = torch.Generator().manual_seed(seed)
    cols = []
    for b in range(bins):  # a handful of bins, each drawn for all n sets at once
        need = int((own_bin == b).sum())
        if need:
            pool = ranked[bin_of_rank == b]
            pick = torch.rand(n, len(pool), generator=g).argsort(1)[:, :need]
            cols.append(pool[pick])
    return torch.cat(cols, 1)


def disjoint_draws(width: int, dims: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` control sets ``int64 [n, k]`` drawn uniformly from the dims outside ``dims``."""
    dims = torch.as_tensor(dims, dtype=torch.int64).cpu()
    out = _outside(width, dims)
    if len(out) < len(dims):
        raise InvalidArgument(f"{len(dims)} control dims needed but only {len(out)} dims lie "
                              "outside the feature; use a smaller feature.")
    g = torch.Generator().manual_seed(seed)
    return out[torch.rand(n, len(out), generator=g).argsort(1)[:, :len(dims)]]


def control_patterns(draws: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Dense patterns ``float32 [n, width]``: each drawn dim carries its usual sign (of ``mean``)."""
    mean = torch.as_tensor(mean).float().cpu()
    usual = torch.where(mean >= 0, 1.0, -1.0)
    out = torch.zeros(draws.shape[0], len(mean))
    return out.scatter_(1, draws, usual[draws])


@torch.no_grad()
def site_statistics(model: nn.Module, tok, prompts: list[str], sites) -> dict[str, tuple]:
    """Per site, ``(mean |x|, mean x)`` ``[width]`` over the prompts' real (unpadded) positions."""
    enc = _encode(model, tok, prompts)
    names = [s.name for s in resolve(model, sites)]
    with Capture(model, names) as cap:
        model(**enc)
    real = enc["attention_mask"].bool()
    return {s: (cap[s][real].abs().float().mean(0).cpu(), cap[s][real].float().mean(0).cpu())
            for s in names}


class RowFlip:
    """Flip a different pattern in every batch row: row ``b`` of ``patterns[site]`` in row ``b``.

    ``patterns``: ``{site: float [rows, width]}`` (0 = leave the dim, ±1 = flip it away from that
    sign; a zero row leaves its batch row untouched). Every forward pass inside the block must
    have exactly ``rows`` rows. Values whose sign agrees with the pattern become ``-strength *
    x`` at every position.
    """

    def __init__(self, model: nn.Module, patterns: dict[str, torch.Tensor], strength: float = 1.0):
        if not patterns:
            raise InvalidArgument("RowFlip needs {site: patterns [rows, width]}.")
        sizes = {p.shape[0] for p in patterns.values()}
        if len(sizes) != 1 or any(p.dim() != 2 for p in patterns.values()):
            raise InvalidArgument("every site's patterns must be [rows, width] with one row count.")
        self.model, self.strength, self.rows = model, float(strength), sizes.pop()
        self._sites = {s.name: s for s in resolve(model, list(patterns))}
        self._patterns = patterns
        self._hooks: HookSet | None = None

    def _make_hook(self, site, pattern: torch.Tensor):
        def hook(module, args, output):
            whole = output[0] if isinstance(output, (tuple, list)) else output
            x = site.select(whole)
            if x.shape[0] != self.rows or x.shape[-1] != pattern.shape[1]:
                raise HookError(f"RowFlip at {site.name}: the batch is {tuple(x.shape)} but the "
                                f"patterns are {tuple(pattern.shape)}; pass one row per batch row.")
            w = pattern.to(device=x.device, dtype=x.dtype).reshape(self.rows, *[1] * (x.dim() - 2), -1)
            new = torch.where(x * w > 0, -self.strength * x, x)
            new = _put_back(site, whole, new)
            if isinstance(output, tuple):
                return (new, *output[1:])
            if isinstance(output, list):
                return [new, *output[1:]]
            return new
        return hook

    def __enter__(self) -> "RowFlip":
        hooks = HookSet(self.model, "row_flip", self)
        for name, site in self._sites.items():
            if site.on != "output":
                raise InvalidArgument(f"RowFlip supports sites read from a module's output; "
                                      f"{name} is read from its input. Use sign_flip there.")
            hooks.add(site.module_path, self._make_hook(site, self._patterns[name]), "output", name)
        self._hooks = hooks.attach()
        return self

    def __exit__(self, *exc) -> bool:
        if self._hooks is not None:
            self._hooks.detach()
            self._hooks = None
        return False


def _encode(model, tok, prompts: list[str]) -> dict:
    enc = tok(prompts, return_tensors="pt", padding=True)
    device = input_device(model)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def _last_logits(model, enc: dict) -> torch.Tensor:
    """Logits at each row's last real token; only the last position's when all rows end there."""
    mask = enc["attention_mask"]
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)
    kw = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    if bool((last == mask.shape[1] - 1).all()) and \
            "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(**enc, logits_to_keep=1, **kw).logits[:, -1]
    logits = model(**enc, **kw).logits
    return logits[torch.arange(len(last), device=logits.device), last]


@torch.no_grad()
def pattern_masses(model: nn.Module, tok, prompts: list[str], token_sets: list[torch.Tensor],
                   patterns: dict[str, torch.Tensor], strength: float = 1.0,
                   rows_per_pass: int = 128) -> torch.Tensor:
    """Next-token mass of each token set after each prompt under each pattern: ``[n, P, T]``.

    ``patterns``: ``{site: float [n, width]}``, pattern ``j`` made of row ``j`` of every site
    (zeros where a pattern leaves a site alone; an all-zero pattern is the unflipped baseline).
    Prompts x patterns are stacked in the batch, ``rows_per_pass`` rows (at least one pattern's
    prompts) a forward pass.
    """
    sizes = {p.shape[0] for p in patterns.values()}
    if len(sizes) != 1:
        raise InvalidArgument("every site's patterns must have the same number of rows.")
    n, n_p = sizes.pop(), len(prompts)
    enc = _encode(model, tok, prompts)
    sets = [torch.as_tensor(s, dtype=torch.int64) for s in token_sets]
    per = max(1, rows_per_pass // n_p)  # patterns a pass
    out = []
    for start in range(0, n, per):
        stop = min(n, start + per)
        rep = {k: v.repeat(stop - start, 1) for k, v in enc.items()}
        chunk = {s: p[start:stop].repeat_interleave(n_p, 0) for s, p in patterns.items()}
        with RowFlip(model, chunk, strength):
            probs = _last_logits(model, rep).float().softmax(-1).cpu()
        mass = torch.stack([probs[:, s].sum(-1) for s in sets], -1).double()
        out.append(mass.reshape(stop - start, n_p, len(sets)))
    return torch.cat(out)


def _deltas(mass: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over prompts of (mass - base) and of (log mass - log base): ``[n]`` each."""
    log = lambda m: m.clamp_min(1e-30).log()  # noqa: E731
    return (mass - base).mean(-1), (log(mass) - log(base)).mean(-1)


@dataclass
class FlipDistribution:
    """A feature's flip effects at one site next to its control distributions.

    Effects are mean changes over the prompts (flipped minus unflipped) of the concept's
    next-token mass (``effects``) and of its log (``effects_logp``); ``controls[kind]`` holds
    one such change per draw. ``p[kind]`` / ``p_logp[kind]``: ``away`` against that kind's draws
    (:func:`~bagofdims.steering.significance.permutation_p`). ``massive[kind]``: draws that
    include a dim whose mean ``|x|`` exceeds ``massive_ratio`` times the site's median.
    """

    name: str
    site: str
    n_prompts: int
    baseline_mass: float
    baseline_logp: float
    effects: dict[str, float] = field(default_factory=dict)
    effects_logp: dict[str, float] = field(default_factory=dict)
    controls: dict[str, list[float]] = field(default_factory=dict)
    controls_logp: dict[str, list[float]] = field(default_factory=dict)
    p: dict[str, float] = field(default_factory=dict)
    p_logp: dict[str, float] = field(default_factory=dict)
    massive: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def flip_distribution(model: nn.Module, tok, feature: Feature, prompts: list[str],
                      tokens: torch.Tensor, n_draws: int = 50, kinds=("stratified", "disjoint"),
                      extra: dict[str, Feature] | None = None, strata: int = 10, seed: int = 0,
                      stats: tuple | None = None, rows_per_pass: int = 128,
                      massive_ratio: float = 20.0) -> FlipDistribution:
    """``away``, ``toward``, ``single`` (the feature's first dim alone: the best by anchor AUC
    for discovered features), each ``extra`` feature (e.g. an unrelated concept's) and
    ``n_draws`` controls of each kind, all at ``feature.site``, in batched forward passes.

    ``stats``: ``(mean |x|, mean x)`` at the site (default: :func:`site_statistics` on the
    prompts), from which the control draws and their signs come.
    """
    bad = set(kinds) - {"stratified", "disjoint"}
    if bad:
        raise InvalidArgument(f"Unknown control kinds {sorted(bad)}; use 'stratified', 'disjoint'.")
    site = feature.site
    mag, mean = stats if stats is not None else site_statistics(model, tok, prompts, site)[site]
    width = len(mag)
    away = feature.dense(width)
    single = torch.zeros(width)
    if len(feature):
        single[int(feature.dims[0])] = float(feature.signs[0])
    named = {"away": away, "toward": -away, "single": single}
    named.update({k: f.dense(width) for k, f in (extra or {}).items()})
    rows = [torch.zeros(width), *named.values()]
    drawn = {}
    for i, kind in enumerate(kinds):
        draws = stratified_draws(mag, feature.dims, n_draws, strata, seed + i) \
            if kind == "stratified" else disjoint_draws(width, feature.dims, n_draws, seed + i)
        drawn[kind] = draws
        rows.extend(control_patterns(draws, mean))
    mass = pattern_masses(model, tok, prompts, [tokens], {site: torch.stack(rows)},
                          rows_per_pass=rows_per_pass)[..., 0]  # [n, P]
    base = mass[0]
    dm, dl = _deltas(mass[1:], base)
    log_base = float(base.clamp_min(1e-30).log().mean())
    out = FlipDistribution(feature.name, site, len(prompts), float(base.mean()), log_base)
    for i, key in enumerate(named):
        out.effects[key], out.effects_logp[key] = float(dm[i]), float(dl[i])
    big = mag > massive_ratio * mag.median()
    at = len(named)
    for kind, draws in drawn.items():
        cm, cl = dm[at:at + n_draws], dl[at:at + n_draws]
        at += n_draws
        out.controls[kind], out.controls_logp[kind] = cm.tolist(), cl.tolist()
        out.p[kind] = float(permutation_p(out.effects["away"], cm))
        out.p_logp[kind] = float(permutation_p(out.effects_logp["away"], cl))
        out.massive[kind] = int(big[draws].any(1).sum())
    return out


def flip_matrix(model: nn.Module, tok, features: list[Feature], prompts: dict[str, list[str]],
                tokens: dict[str, torch.Tensor], rows_per_pass: int = 128) -> dict:
    """Flip feature ``i`` away (at its own site), measure concept ``j``'s mass on its prompts.

    ``prompts`` / ``tokens``: per concept name (the features' names). Returns ``delta_mass``
    and ``delta_logp`` ``[C, C]`` (rows: flipped, columns: measured; means over the column
    concept's prompts) and ``baseline_mass`` ``[C]``.
    """
    names = [f.name for f in features]
    all_prompts = [p for n in names for p in prompts[n]]
    owner = torch.as_tensor([j for j, n in enumerate(names) for _ in prompts[n]])
    sites = list(dict.fromkeys(f.site for f in features))
    widths = {f.site: f.width for f in features}
    if any(w is None for w in widths.values()):
        widths = {s: st[0].shape[0] for s, st in site_statistics(model, tok, all_prompts[:1],
                                                                 sites).items()}
    pats = {s: torch.zeros(len(features) + 1, widths[s]) for s in sites}
    for i, f in enumerate(features):
        pats[f.site][i + 1] = f.dense(widths[f.site])
    mass = pattern_masses(model, tok, all_prompts, [tokens[n] for n in names], pats,
                          rows_per_pass=rows_per_pass)
    own = mass[:, torch.arange(len(owner)), owner]  # [C + 1, P] each prompt's own concept
    counts = torch.bincount(owner, minlength=len(names)).double()

    def by_concept(x: torch.Tensor) -> torch.Tensor:  # [C + 1, P] -> [C + 1, C]
        return torch.zeros(x.shape[0], len(names), dtype=torch.float64).index_add_(1, owner, x) / counts

    log = own.clamp_min(1e-30).log()
    return {"names": names, "sites": [f.site for f in features],
            "delta_mass": by_concept(own[1:] - own[0]).tolist(),
            "delta_logp": by_concept(log[1:] - log[0]).tolist(),
            "baseline_mass": by_concept(own[:1])[0].tolist()}
