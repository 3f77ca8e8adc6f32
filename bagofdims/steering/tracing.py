"""Tracing where features live: K/V survival (E5) and FFN writer neurons (E6), with random controls.

**K/V survival**: discovery (E3) is rerun on the signs of the key and value projections; a category
counts as *discoverable* at a site when its prototype's held-out AUC against the vocabulary reaches
a threshold (several are reported, since the paper does not give its rule).

**FFN writers**: column ``j`` of a block's down projection (``[d_model, d_ff]``) is the direction
neuron ``j`` writes into the residual stream. Its *agreement* with a feature is the fraction of the
feature's dims where the column's sign equals the prototype's. A *single writer* is a column whose
agreement exceeds ``threshold``; a *coalition* is the ``top_n`` columns by agreement, and its
majority vote (the sign of the summed column signs on each dim) is compared with the prototype.
Because choosing columns by agreement and scoring them on the same dims favours any matrix,
the cross-validated numbers choose the columns on a random half of the feature's dims and score
them on the other half. Gated FFNs (SwiGLU/GeGLU) produce activations of either sign, so with
``polarity="both"`` a column counts by ``max(a, 1 - a)`` and votes with its better orientation.
Gemma-style blocks scale the MLP output by a post-norm whose weight can be negative; the writer
signs include that scale.

Controls: a Gaussian matrix of the same shape, and the same layer of a randomly initialised copy
of the model (``type(model)(model.config)`` under a fixed seed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from bagofdims.devices import real_tensor
from bagofdims.hooks import HookSet
from bagofdims.signs import bits
from bagofdims.features.feature import Feature
from bagofdims.catalog import Catalog
from bagofdims.sites import find_blocks, resolve
from bagofdims.errors import InvalidArgument


# -- FFN writers --------------------------------------------------------------------------------
def down_proj(model: nn.Module, layer: int) -> torch.Tensor:
    """Write directions of block ``layer``'s FFN neurons as ``[d_model, d_ff]`` (post-norm sign
    included for Gemma-style blocks)."""
    site = resolve(model, f"neurons.{layer}")[0]
    mod = model.get_submodule(site.module_path)
    w = real_tensor(mod).detach().float()
    if type(mod).__name__ == "Conv1D":  # GPT-2 stores [in, out]
        w = w.t()
    _, blocks = find_blocks(model)
    post = getattr(blocks[layer], "post_feedforward_layernorm", None)
    if post is not None and getattr(post, "weight", None) is not None:
        scale = real_tensor(post).detach().float()
        if "gemma" in type(post).__name__.lower():  # Gemma's RMSNorm multiplies by (1 + w)
            scale = 1.0 + scale
        w = w * torch.sign(scale)[:, None]
    return w


def gaussian_like(weight: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A Gaussian matrix of the same shape (control)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(weight.shape, generator=g)


def random_init_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A randomly initialised model of the same architecture and config (control)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        copy = type(model)(model.config)
    finally:
        torch.random.set_rng_state(state)
    return copy.eval()


@dataclass
class WriterStats:
    """Per-feature FFN-writer numbers for one weight matrix (tensors are ``[n_features]``)."""

    names: list[str]
    best_agreement: torch.Tensor  # the best single column's agreement
    best_neuron: torch.Tensor  # its index
    n_writers: torch.Tensor  # columns above the threshold
    coalition: torch.Tensor  # top-N majority vote agreement (same dims used to choose)
    single_cv: torch.Tensor  # best column chosen on half A, agreement on half B
    coalition_cv: torch.Tensor  # coalition chosen on half A, vote scored on half B
    threshold: float
    top_n: int
    polarity: str
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Fractions over features (the paper's numbers) plus means."""
        t = self.threshold
        return {
            "n_features": len(self.names),
            "single_writer_fraction": float((self.best_agreement > t).float().mean()),
            "single_writer_fraction_cv": float((self.single_cv > t).float().mean()),
            "coalition_above_threshold": float((self.coalition > t).float().mean()),
            "coalition_above_threshold_cv": float((self.coalition_cv > t).float().mean()),
            "mean_best_agreement": float(self.best_agreement.mean()),
            "mean_coalition_agreement": float(self.coalition.mean()),
            "mean_coalition_agreement_cv": float(self.coalition_cv.mean()),
            "mean_writers_per_feature": float(self.n_writers.float().mean()),
            "threshold": t, "top_n": self.top_n, "polarity": self.polarity,
        }


def _sign_matrix(features: list[Feature], width: int) -> torch.Tensor:
    """Dense ``[C, width]``: the prototype sign on each feature's dims, 0 elsewhere."""
    return bits.feature_matrix([(f.dims, f.signs) for f in features], width).t().float()


def _agreement(s: torch.Tensor, wsign: torch.Tensor) -> torch.Tensor:
    """``[C, d_ff]`` fraction of each feature's dims where each column's sign matches."""
    n = s.abs().sum(1, keepdim=True).clamp(min=1)
    return (s @ wsign / n + 1) / 2


def _coalition_vote(s_eval: torch.Tensor, wsign: torch.Tensor, score: torch.Tensor,
                    orient: torch.Tensor, top_n: int) -> torch.Tensor:
    """Agreement with ``s_eval`` of the majority vote of each feature's ``top_n`` columns."""
    top = score.topk(min(top_n, score.shape[1]), dim=1).indices  # [C, N]
    o = orient.gather(1, top)  # [C, N]
    # votes[c] = sum_n o[c,n] * wsign[:, top[c,n]]; one batched matmul over features
    votes = torch.bmm(wsign.t()[top].transpose(1, 2), o.unsqueeze(-1)).squeeze(-1)  # [C, d_model]
    agree = (torch.sign(votes) * s_eval) > 0
    n = s_eval.abs().sum(1).clamp(min=1)
    return agree.float().sum(1) / n


def ffn_writers(weight: torch.Tensor, features: list[Feature], threshold: float = 0.7,
                top_n: int = 200, polarity: str = "positive", seed: int = 0) -> WriterStats:
    """FFN-writer statistics of ``features`` against a ``[d_model, d_ff]`` write matrix.

    ``polarity``: ``"positive"`` (a column writes the feature when its activation is positive,
    the paper's reading) or ``"both"`` (either orientation; see the module docstring).
    """
    if polarity not in ("positive", "both"):
        raise InvalidArgument("polarity must be 'positive' or 'both'.")
    if not features:
        raise InvalidArgument("No features given.")
    width = weight.shape[0]
    for f in features:
        f.check_width(width)
    wsign = torch.sign(weight.float())
    s = _sign_matrix(features, width)
    # random halves of each feature's dims, for the cross-validated numbers
    g = torch.Generator().manual_seed(seed)
    half = torch.rand(s.shape, generator=g) < 0.5
    s_a, s_b = s * half, s * ~half

    def score_of(agr):
        return agr if polarity == "positive" else torch.maximum(agr, 1 - agr)

    def orient_of(agr):
        return torch.ones_like(agr) if polarity == "positive" else torch.where(agr >= 0.5, 1.0, -1.0)

    agr = _agreement(s, wsign)
    sc = score_of(agr)
    best, best_idx = sc.max(1)
    coalition = _coalition_vote(s, wsign, sc, orient_of(agr), top_n)
    agr_a, agr_b = _agreement(s_a, wsign), _agreement(s_b, wsign)
    sc_a = score_of(agr_a)
    pick = sc_a.argmax(1, keepdim=True)
    single_cv = agr_b.gather(1, pick).squeeze(1)
    if polarity == "both":  # keep the orientation chosen on half A
        flip = agr_a.gather(1, pick).squeeze(1) < 0.5
        single_cv = torch.where(flip, 1 - single_cv, single_cv)
    coalition_cv = _coalition_vote(s_b, wsign, sc_a, orient_of(agr_a), top_n)
    return WriterStats([f.name for f in features], best, best_idx, (sc > threshold).sum(1),
                       coalition, single_cv, coalition_cv, threshold, top_n, polarity)


def writer_controls(model: nn.Module, features: list[Feature], layer: int, threshold: float = 0.7,
                    top_n: int = 200, polarity: str = "positive", seed: int = 0,
                    random_model: nn.Module | None = None) -> dict[str, WriterStats]:
    """FFN writers of ``features`` in block ``layer``: the model, a Gaussian matrix, a random model."""
    w = down_proj(model, layer)
    random_model = random_model if random_model is not None else random_init_copy(model, seed)
    kw = dict(threshold=threshold, top_n=top_n, polarity=polarity, seed=seed)
    return {
        "model": ffn_writers(w, features, **kw),
        "gaussian": ffn_writers(gaussian_like(w, seed), features, **kw),
        "random_init": ffn_writers(down_proj(random_model, layer), features, **kw),
    }


# -- keys after the rotary embedding --------------------------------------------------------------
def _position_embeddings(model: nn.Module, layers: list[int]) -> tuple[HookSet, dict]:
    """A hook set (enter it around the forward pass) that fills ``{layer: (cos, sin)}`` with what
    each block's attention module is given (pre-hooks with kwargs)."""
    path, blocks = find_blocks(model)
    seen: dict[int, tuple] = {}
    hooks = HookSet(model, "rotary keys")
    for L in layers:
        if getattr(blocks[L], "self_attn", None) is None:
            raise InvalidArgument(f"Block {L} of {type(model).__name__} has no self_attn: no "
                                  "rotary keys to read.")

        def grab(module, args, kwargs, L=L):
            pe = kwargs.get("position_embeddings")
            if pe is None:
                raise InvalidArgument(
                    f"{type(module).__name__} is given no position_embeddings: the model does not "
                    "use a rotary embedding, so its k.L sites are already the keys attention uses.")
            seen[L] = pe

        hooks.add(f"{path}.{L}.self_attn" if path else f"{L}.self_attn", grab, where="input")
    return hooks, seen


def rotary_keys(model: nn.Module, layers, **inputs) -> dict[str, torch.Tensor]:
    """One forward pass of ``inputs``; returns ``{"k.L": keys, "k_rot.L": keys after the rotary
    embedding}`` as ``[batch, seq, heads * head_dim]`` for each of ``layers``.

    ``k_rot.L`` is what attention scores queries against: ``k.L`` (after the k-norm where the
    model has one) rotated by the (cos, sin) the block's attention module received in this very
    pass (so local/global rotary bases, scaling and positions are the model's own), through the
    model's own ``apply_rotary_pos_emb``. Nothing is re-implemented."""
    from bagofdims.capture import Capture

    layers = sorted(set(int(L) for L in layers))
    hooks, pe = _position_embeddings(model, layers)
    with Capture(model, [f"k.{L}" for L in layers]) as cap, hooks:
        model(**inputs)
    _, blocks = find_blocks(model)
    out = {}
    for L in layers:
        attn = blocks[L].self_attn
        apply = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
        if apply is None:
            raise InvalidArgument(f"{type(attn).__module__} has no apply_rotary_pos_emb; "
                                  "rotary keys are read from Llama/Qwen/Gemma/Mistral-style models.")
        k = cap[f"k.{L}"]
        head_dim = getattr(attn, "head_dim", None) or model.config.head_dim
        heads = k.view(*k.shape[:-1], -1, head_dim).transpose(1, 2)  # [b, heads, s, head_dim]
        cos, sin = pe[L]
        _, rotated = apply(heads, heads, cos, sin)
        out[f"k.{L}"] = k
        out[f"k_rot.{L}"] = rotated.transpose(1, 2).flatten(-2)
    return out


# -- K/V survival -------------------------------------------------------------------------------
def kv_survival(cache, layers=None, categories="default", tokenizer=None,
                thresholds=(0.75, 0.9), config=None, kinds=("resid", "k", "v"),
                n_anchors: int = 50, n_min_held_out: int = 10, progress: bool = False) -> dict:
    """How many categories stay discoverable on the ``k.L`` / ``v.L`` sign caches (E5).

    Builds a catalog over ``{kind}.{L}`` for the given layers (default: every layer the cache has
    for all kinds) and, per site, counts categories whose held-out AUC reaches each threshold;
    ``embed`` is included when cached, as the baseline a single-token cache must beat. With the
    catalog's evidence (the default), each site also counts the categories *above its own null*
    (random-token and random-listed-word references, both p < alpha) and gives the median
    listed-word null AUC: a fixed threshold that the embedding passes too does not discriminate.

    Returns ``{"sites": {site: {...}}, "categories": [...], "thresholds": [...]}``.
    """
    have = set(cache.sites)
    if layers is None:
        layers = sorted({int(s.split(".")[1]) for s in have if s.startswith("k.")})
    sites = [f"{k}.{L}" for L in layers for k in kinds if f"{k}.{L}" in have]
    if not sites:
        raise InvalidArgument(f"The cache has none of the sites {kinds} at layers {list(layers)}; build "
                         "it with sites=['k.*', 'v.*', 'resid.*'].")
    if "embed" in have:
        sites = ["embed"] + sites
    cat = Catalog.build(cache, categories=categories, sites=sites, tokenizer=tokenizer,
                        config=config, n_anchors=n_anchors, n_min_held_out=n_min_held_out,
                        progress=progress)
    out: dict = {"sites": {}, "categories": cat.names, "thresholds": list(thresholds)}
    for site in sites:
        feats = cat.at(site)
        auc = torch.tensor([f.metrics["held_out_auc"] for f in feats])
        hard = torch.tensor([f.metrics["hard_auc"] for f in feats])
        row = {
            "n_categories": len(feats),
            "discoverable": {str(t): int((auc >= t).sum()) for t in thresholds},
            "mean_held_out_auc": float(auc.nanmean()),
            "mean_hard_auc": float(hard.nanmean()),
        }
        if feats and "above_null" in feats[0].metrics:  # the site's own references (evidence)
            null = torch.tensor([f.metrics["null_listed_auc"] for f in feats])
            row.update(above_null=int(sum(f.metrics["above_null"] == 1.0 for f in feats)),
                       median_null_listed_auc=float(null.nanmedian()),
                       mean_auc_minus_listed_null=float((auc - null).nanmean()))
        out["sites"][site] = row
    out["catalog"] = cat
    return out
