"""The effect of a sign flip on what the model says next (E7), always next to its controls.

Unit: the next-token **probability mass** on a concept's tokens (its anchors and held-out ids),
read at the last real token of prompts that elicit the concept ("Here is a list of fruits:
apple, banana, cherry,"), and its log. ``flip_effect`` reports, per layer, the change of both
(intervened minus baseline, averaged over prompts) for:

- ``away`` / ``toward``: the concept's own feature at that layer;
- ``random``: as many magnitude-matched dims outside the feature, flipped away;
- ``disjoint``: as many uniformly drawn dims outside the feature, flipped away;
- ``concept``: an unrelated concept's feature at the same layer, flipped away.

``specificity_matrix`` flips each concept in turn and measures every concept's mass on its own
prompts: a specific feature moves its diagonal entry and leaves the rest.

Each control here is a single draw; :mod:`bagofdims.steering.controls` measures a feature
against whole distributions of them, batched, with p-values and specificity.

``strength_sweep`` generates greedily at a list of strengths and scores each continuation's
perplexity under the unsteered model, which shows the strength at which the text degrades.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import torch

from bagofdims.devices import input_device
from bagofdims.features.feature import Feature
from bagofdims.steering.interventions import sign_flip
from bagofdims.steering.prompts import LABELS, TEMPLATES, concept_prompts, concept_tokens, split_prompts
from bagofdims.errors import InvalidArgument, NotFound

__all__ = ["CONDITIONS", "LABELS", "TEMPLATES", "FlipEffect", "concept_prompts", "concept_tokens",
           "flip_effect", "next_token_mass", "pick_unrelated", "specificity_matrix", "split_prompts",
           "strength_sweep"]

CONDITIONS = ("away", "toward", "random", "disjoint", "concept")

def require_lm(model) -> None:
    """Raise unless ``model`` predicts next tokens (an LM head), as generation and masses need."""
    can = getattr(model, "can_generate", None)
    if not (callable(can) and can()) or model.get_output_embeddings() is None:
        raise InvalidArgument(
            f"{type(model).__name__} has no language-model head (an encoder?): next-token masses "
            "and generation need a causal LM such as smollm2 or gemma3-270m; sign_flip itself "
            "works on any model.")


@torch.no_grad()
def next_token_mass(model, tok, prompts: list[str], token_sets: list[torch.Tensor]) -> torch.Tensor:
    """``[n_prompts, n_sets]`` next-token probability mass of each token set after each prompt."""
    require_lm(model)
    enc = tok(prompts, return_tensors="pt", padding=True)
    device = input_device(model)
    enc = {k: v.to(device) for k, v in enc.items()}
    logits = model(**enc).logits
    mask = enc["attention_mask"]
    last = (mask * torch.arange(mask.shape[1], device=device)).argmax(-1)  # left or right padding
    probs = logits[torch.arange(len(prompts), device=device), last].float().softmax(-1)
    cols = [probs[:, s.to(device)].sum(-1) for s in token_sets]
    return torch.stack(cols, -1).double().cpu()


@dataclass
class FlipEffect:
    """Per-layer change of a concept's next-token mass under a flip and its controls."""

    name: str
    sites: list[str]
    baseline_mass: float
    baseline_logp: float
    delta_mass: dict[str, list[float]] = field(default_factory=dict)  # condition -> per site
    delta_logp: dict[str, list[float]] = field(default_factory=dict)
    n_dims: list[int] = field(default_factory=list)
    control_concept: str | None = None
    prompts: list[str] = field(default_factory=list)

    def best(self, condition: str = "away") -> int:
        """Index of the site where ``condition`` lowers the mass most."""
        return min(range(len(self.sites)), key=lambda i: self.delta_mass[condition][i])

    def at(self, i: int) -> dict[str, float]:
        """Every condition's mass change at site index ``i``."""
        return {c: v[i] for c, v in self.delta_mass.items()}

    def to_dict(self) -> dict:
        return asdict(self)


def _feature_at(cat, name: str, site: str) -> Feature:
    if isinstance(cat, dict):
        return cat[site]
    return cat.get(name, site)


def pick_unrelated(cat, name: str, site: str) -> str:
    """The catalog concept whose feature at ``site`` shares the fewest dims and tokens with ``name``."""
    me = cat.get(name, site)
    mine, my_tokens = set(me.dims.tolist()), set(concept_tokens(me).tolist())
    best = None
    for f in cat.at(site):
        if f.name == name or set(concept_tokens(f).tolist()) & my_tokens:
            continue
        overlap = len(mine & set(f.dims.tolist())) / max(len(mine), 1)
        if best is None or overlap < best[0]:
            best = (overlap, f.name)
    if best is None:
        raise InvalidArgument(f"No unrelated concept at {site} for the 'concept' control; pass "
                         "control_concept= or leave 'concept' out of conditions.")
    return best[1]


def _sites(cat, name: str, layers) -> list[str]:
    if isinstance(cat, dict):
        have = list(cat)
    else:
        have = [f.site for f in cat.features if f.name == name]
    if isinstance(layers, str) and layers == "all":
        return [s for s in have if s.startswith("resid.")] or have
    out = [f"resid.{L}" if isinstance(L, int) else L for L in layers]
    missing = [s for s in out if s not in have]
    if missing:
        raise NotFound(f"'{name}' has no feature at {missing}; available: {have}.")
    return out


def flip_effect(model, tok, cat, feature, prompts: list[str] | None = None, layers="all",
                conditions=CONDITIONS, strength: float = 1.0, positions="all",
                control_concept: str | None = None, label: str | None = None, seed: int = 0,
                n_prompts: int = 3) -> FlipEffect:
    """Change of the concept's next-token mass when its feature is flipped, per layer, with controls.

    Args:
        cat: a :class:`~bagofdims.catalog.Catalog` (the feature at each layer is the catalog's
            feature of that name at ``resid.L``), or a dict ``{site: Feature}``.
        feature: the concept's name or a Feature (its name is used).
        prompts: prompts that elicit the concept (default: :func:`concept_prompts`).
        layers: ``"all"`` (every ``resid`` site of the concept), or layer ints / site names.
        conditions: subset of ``away, toward, random, disjoint, concept``.
    """
    name = feature.name if isinstance(feature, Feature) else str(feature)
    bad = set(conditions) - set(CONDITIONS)
    if bad:
        raise InvalidArgument(f"Unknown conditions {sorted(bad)}; use {CONDITIONS}.")
    sites = _sites(cat, name, layers)
    first = _feature_at(cat, name, sites[0])
    prompts = prompts or concept_prompts(first, label, n=n_prompts, seed=seed)
    tokens = concept_tokens(first)
    base = next_token_mass(model, tok, prompts, [tokens])[:, 0]
    eff = FlipEffect(name, sites, float(base.mean()), float(base.clamp_min(1e-30).log().mean()),
                     {c: [] for c in conditions}, {c: [] for c in conditions}, prompts=prompts)
    if "concept" in conditions:
        if isinstance(cat, dict):
            raise InvalidArgument("The 'concept' control needs a Catalog (to find an unrelated concept).")
        eff.control_concept = control_concept or pick_unrelated(cat, name, sites[-1])
    for site in sites:
        f = _feature_at(cat, name, site)
        eff.n_dims.append(len(f))
        for cond in conditions:
            kw: dict = {"mode": "away", "strength": strength, "positions": positions, "seed": seed}
            if cond == "toward":
                kw["mode"] = "toward"
            elif cond in ("random", "disjoint"):
                kw["control"] = cond
            elif cond == "concept":
                kw["control"] = cat.get(eff.control_concept, site)
            with sign_flip(model, f, **kw):
                mass = next_token_mass(model, tok, prompts, [tokens])[:, 0]
            eff.delta_mass[cond].append(float((mass - base).mean()))
            eff.delta_logp[cond].append(float((mass.clamp_min(1e-30).log()
                                               - base.clamp_min(1e-30).log()).mean()))
    return eff


def specificity_matrix(model, tok, cat, names: list[str], sites, prompts: dict | None = None,
                       mode: str = "away", strength: float = 1.0, positions="all",
                       seed: int = 0, n_prompts: int = 3) -> dict:
    """Flip concept ``i`` (at ``sites[i]``, or one site for all), measure concept ``j``'s mass.

    Returns ``delta_mass`` and ``delta_logp`` ``[C, C]`` lists (rows: flipped, columns: measured),
    ``baseline_mass`` ``[C]`` and the names and sites. One forward pass per flipped concept over
    every concept's prompts.
    """
    if isinstance(sites, str):
        sites = [sites] * len(names)
    feats = [cat.get(n, s) for n, s in zip(names, sites)]
    prompts = prompts or {f.name: concept_prompts(f, n=n_prompts, seed=seed) for f in feats}
    all_prompts = [p for n in names for p in prompts[n]]
    owner = torch.as_tensor([j for j, n in enumerate(names) for _ in prompts[n]])
    token_sets = [concept_tokens(f) for f in feats]

    def own(mass: torch.Tensor) -> torch.Tensor:  # each prompt's mass on its own concept
        return mass[torch.arange(len(owner)), owner]

    counts = torch.bincount(owner, minlength=len(names)).double()

    def group_mean(x: torch.Tensor) -> list[float]:  # mean over each concept's prompts
        return (torch.zeros(len(names), dtype=torch.float64).index_add_(0, owner, x) / counts).tolist()

    base = own(next_token_mass(model, tok, all_prompts, token_sets))
    dm, dl = [], []
    for f in feats:
        with sign_flip(model, f, mode=mode, strength=strength, positions=positions, seed=seed):
            m = own(next_token_mass(model, tok, all_prompts, token_sets))
        dm.append(group_mean(m - base))
        dl.append(group_mean(m.clamp_min(1e-30).log() - base.clamp_min(1e-30).log()))
    return {"names": list(names), "sites": list(sites), "mode": mode,
            "baseline_mass": group_mean(base), "delta_mass": dm, "delta_logp": dl,
            "diagonal_rank": _diagonal_rank(dl)}


def _diagonal_rank(dl: list[list[float]]) -> float:
    """Fraction of concepts whose own flip lowers their log-mass more than any other flip does."""
    t = torch.tensor(dl)
    if t.numel() == 0 or any(math.isnan(x) for x in t.flatten().tolist()):
        return float("nan")
    return float((t.argmin(0) == torch.arange(len(t))).float().mean())


# -- strength sweep: where steering starts to break the text ---------------------------------------
SWEEP_STRENGTHS = (0.5, 1.0, 2.0, 4.0, 8.0)
MAX_SWEEP = 8  # strengths per sweep: each costs one generation
DEGRADE_FACTOR = 2.0  # perplexity this many times the baseline's counts as degraded text


def check_strengths(strengths) -> list[float]:
    """``strengths`` as ascending floats: 1 to :data:`MAX_SWEEP` distinct finite numbers >= 0."""
    if isinstance(strengths, (str, bytes)) or not hasattr(strengths, "__iter__"):
        raise InvalidArgument(f"strengths={strengths!r}: pass a list of numbers, e.g. "
                              f"{list(SWEEP_STRENGTHS)}.")
    out = []
    for s in strengths:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            raise InvalidArgument(f"Strength {s!r} is not a finite number >= 0; every strength of "
                                  "a sweep must be one (1 is a pure sign flip).")
        out.append(float(s))
    if not 1 <= len(out) <= MAX_SWEEP:
        raise InvalidArgument(f"A sweep takes 1 to {MAX_SWEEP} strengths, got {len(out)}; "
                              f"pass fewer, e.g. {list(SWEEP_STRENGTHS)}.")
    if len(set(out)) != len(out):
        raise InvalidArgument(f"Strengths {out} repeat a value; give each strength once.")
    return sorted(out)


@torch.no_grad()
def continuation_perplexity(model, prompt_ids: torch.Tensor, new_ids: torch.Tensor) -> float:
    """Perplexity of ``new_ids`` after ``prompt_ids`` (1-D) under ``model`` as it is now (call it
    outside any flip to score under the unsteered model); NaN for an empty continuation."""
    if new_ids.numel() == 0:
        return float("nan")
    ids = torch.cat([prompt_ids, new_ids])[None]
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    n = len(prompt_ids)
    logp = logits[n - 1:-1].log_softmax(-1).gather(-1, new_ids[:, None])[:, 0]
    return float((-logp.mean()).exp())


def degrades_at(rows: list[dict], factor: float = DEGRADE_FACTOR) -> float | None:
    """The first strength of a :func:`strength_sweep` whose perplexity exceeds ``factor`` times
    the baseline's (None: none does)."""
    base = rows[0]["ppl"]
    for r in rows[1:]:
        if r["ppl"] > factor * base:
            return r["strength"]
    return None


@torch.no_grad()
def strength_sweep(model, tok, feature, prompt: str, strengths=SWEEP_STRENGTHS, mode: str = "away",
                   positions="all", max_new_tokens: int = 16, factor: float = DEGRADE_FACTOR,
                   on_row=None, cancel=None) -> list[dict]:
    """Greedy continuations of ``prompt`` unsteered and with ``feature`` flipped at each strength.

    Returns one dict per run, the baseline first (``strength`` None) and then ``strengths`` in
    ascending order: ``strength``, ``text``, ``n_tokens``, ``ppl`` (perplexity of the
    continuation under the *unsteered* model, so a steered text that the model finds unlikely
    scores high), ``ratio`` (``ppl`` over the baseline's), ``degraded`` (``ratio > factor``) and
    ``mass`` (the concept's next-token mass after the prompt under that run's flip; None when a
    feature has no anchor or held-out tokens). Note that strength 0 is not "no flip": it zeroes
    the flipped values (see :func:`~bagofdims.steering.interventions.sign_flip`).

    ``on_row(row)`` is called as each row finishes; once ``cancel`` (a ``threading.Event``) is
    set, the rows done so far are returned. ``feature`` is a Feature or a list of Features.
    """
    require_lm(model)
    strengths = check_strengths(strengths)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidArgument(f"max_new_tokens={max_new_tokens!r}: pass a whole number >= 1.")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise InvalidArgument(f"factor={factor!r}: pass a finite number > 0 (2: twice the baseline).")
    feats = [feature] if isinstance(feature, Feature) else list(feature)
    sign_flip(model, feats, mode=mode, positions=positions)  # checks mode, positions, features
    device = input_device(model)
    enc = tok([prompt], return_tensors="pt").to(device)
    prompt_ids = enc["input_ids"][0]
    if len(prompt_ids) == 0:
        raise InvalidArgument("The prompt has no tokens; type a prompt.")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(prompt_ids) + max_new_tokens > limit:
        raise InvalidArgument(f"The prompt ({len(prompt_ids)} tokens) plus {max_new_tokens} new "
                              f"tokens exceeds the model's {limit} positions; shorten it.")
    try:
        concept = torch.cat([concept_tokens(f) for f in feats]).unique().to(device)
    except InvalidArgument:
        concept = None  # a hand-made feature without tokens: no mass to report
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows: list[dict] = []
    for s in [None, *strengths]:
        if cancel is not None and cancel.is_set():
            break
        flip = sign_flip(model, feats, mode=mode, strength=s, positions=positions) \
            if s is not None else contextlib.nullcontext()
        with flip:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
        new = out.sequences[0, len(prompt_ids):]
        ppl = continuation_perplexity(model, prompt_ids, new)  # outside the flip: unsteered
        base = rows[0]["ppl"] if rows else ppl
        mass = None
        if concept is not None:  # step 1's logits: the prompt's next token under this run's flip
            mass = float(out.logits[0][0].float().softmax(-1)[concept].sum())
        row = {"strength": s, "text": tok.decode(new, skip_special_tokens=True),
               "n_tokens": len(new), "ppl": ppl, "ratio": ppl / base, "mass": mass}
        row["degraded"] = s is not None and row["ratio"] > factor
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
