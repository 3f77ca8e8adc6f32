"""Discover sign-pattern features from anchor tokens (supervised) or random seeds (unsupervised).

Per dimension ``j`` of a site, the sign (``value > 0``) is a binary score. Its AUC for telling the
anchors from the rest of the vocabulary has the closed form ``0.5 + 0.5 |p_anchor - p_rest|``
where ``p`` is the rate of positive signs; the polarity is the sign of ``p_anchor - p_rest`` (for
every kept dim this is also the anchors' majority sign, the paper's rule, whenever the anchors
lean the same way as the difference). Dims are then kept by one of:

- ``topk`` (default): the ``k`` dims with the highest AUC. Robust for any anchor set of >= 10
  members; on SmolLM2 the paper's fixed threshold keeps 0-6 of 576 dims with 20 anchors.
- ``tau``: every dim with AUC >= ``tau`` (the paper: 0.75); may keep none.
- ``null``: dims above the ``null_quantile`` of the best per-dim AUC reached by random anchor
  sets of the same size (a significance threshold), at least ``min_dims``, at most ``k_max``.

All categories are handled at once: positive counts come from one ``index_add`` over the
anchors' rows, vocabulary counts from one chunked pass over the packed signs.

Anchors are a list of token ids or of words (never both, never one bare string); words need
the tokenizer of the cache's model, passed in: this layer never loads a model or tokenizer.
A concept needs several anchors: with one, every dim's AUC is ``0.5 + 0.5 |1 - p_rest|`` and
the "feature" is that token's own signs on the most lopsided dims. :func:`discover` refuses
fewer than ``min_anchors`` (default 2) distinct anchors and warns below 10.
"""

from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bagofdims.checks import as_indices
from bagofdims.signs import bits, hamming
from bagofdims.features.feature import Feature
from bagofdims.errors import InvalidArgument, InvalidType, NothingFound, OutOfRange

log = logging.getLogger(__name__)

# Fewer distinct anchors than this get a warning: ``topk`` is robust from here on (see above).
FEW_ANCHORS = 10

METHODS = ("topk", "tau", "null")


@dataclass
class DiscoveryConfig:
    """How dims are chosen from per-dim AUCs (recorded in every feature's ``params``)."""

    method: str = "topk"
    k: int = 32  # topk: dims kept
    tau: float = 0.75  # tau: AUC threshold
    null_sets: int = 64  # null: random anchor sets drawn
    null_quantile: float = 0.99  # null: quantile of their best per-dim AUC
    min_dims: int = 8  # null: floor
    k_max: int = 128  # null: ceiling
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgument(f"Unknown discovery method '{self.method}'; use one of {METHODS}.")
        for name in ("k", "null_sets", "min_dims", "k_max", "seed"):
            setattr(self, name, _whole(getattr(self, name), name))
        for name in ("tau", "null_quantile"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or v != v:
                raise InvalidType(f"{name} must be a number, got {v!r}.")
        if self.k < 1 or not 0.5 <= self.tau <= 1:
            raise InvalidArgument(f"k must be >= 1 and tau in [0.5, 1], got k={self.k}, tau={self.tau}.")
        if self.null_sets < 1 or not 0 < self.null_quantile <= 1:
            raise InvalidArgument("null_sets must be >= 1 and null_quantile in (0, 1].")
        if not 0 <= self.min_dims <= self.k_max:
            raise InvalidArgument(f"need 0 <= min_dims <= k_max, got min_dims={self.min_dims}, "
                                  f"k_max={self.k_max}.")


def _whole(v, name: str) -> int:
    """``v`` as an int; floats and bools are refused rather than truncated."""
    try:
        if isinstance(v, bool):
            raise TypeError
        return operator.index(v)
    except TypeError:
        raise InvalidType(f"{name} must be a whole number, got {v!r} ({type(v).__name__}).") from None


def positive_rates(packed: torch.Tensor, d: int, chunk: int = 16384) -> torch.Tensor:
    """Count of positive signs per dim over all rows of ``packed`` (chunked unpack)."""
    bits.check_packed(packed, d, "packed")
    total = torch.zeros(d, dtype=torch.float64)
    for start in range(0, packed.shape[0], chunk):
        block = bits.unpack_signs(packed[start:start + chunk], d, torch.int8)
        total += (block > 0).sum(0, dtype=torch.int64).to(torch.float64).cpu()
    return total


def dim_auc(packed: torch.Tensor, d: int, anchor_rows: list[torch.Tensor],
            vocab_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-category, per-dim sign AUC and polarity: ``(auc [C, d], polarity int8 [C, d])``.

    ``anchor_rows``: for each category, the rows of ``packed`` that are its anchors. The
    negatives are all other rows. ``vocab_pos`` (positive counts over all rows) can be passed
    when calling repeatedly on the same site.
    """
    bits.check_packed(packed, d, "packed")
    n = packed.shape[0]
    if len(anchor_rows) == 0:
        raise InvalidArgument("anchor_rows is empty; pass one tensor of rows per category.")
    sets = [as_indices(a, "anchor rows") for a in anchor_rows]
    sizes = torch.tensor([len(a) for a in sets], dtype=torch.float64)
    if (sizes == 0).any():
        raise InvalidArgument("An anchor set is empty; give each category at least one anchor token.")
    flat = torch.cat(sets)
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= n):
        raise OutOfRange(f"anchor rows must be in 0..{n - 1} (rows of packed), got "
                         f"{int(flat.min())}..{int(flat.max())}; map token ids with cache.rows().")
    seg = torch.repeat_interleave(torch.arange(len(sets)), sizes.to(torch.int64))
    if torch.unique(seg * n + flat).numel() != len(flat):  # p_rest assumes distinct rows
        raise InvalidArgument("an anchor set repeats a row; pass each row once per set.")
    if bool((sizes >= n).any()):
        raise InvalidArgument(f"an anchor set covers all {n} rows, leaving no negatives; pass fewer.")
    if vocab_pos is None:
        vocab_pos = positive_rates(packed, d)
    rows = (bits.unpack_signs(packed[flat], d, torch.int8) > 0).to(torch.float64)
    pos = torch.zeros(len(sets), d, dtype=torch.float64).index_add_(0, seg, rows)
    p_anchor = pos / sizes[:, None]
    p_rest = (vocab_pos[None, :] - pos) / (n - sizes[:, None])
    diff = p_anchor - p_rest
    polarity = torch.where(diff >= 0, 1, -1).to(torch.int8)
    return (0.5 + 0.5 * diff.abs()).to(torch.float32), polarity


def null_threshold(packed: torch.Tensor, d: int, n_anchors: int, cfg: DiscoveryConfig,
                   vocab_pos: torch.Tensor | None = None) -> float:
    """The ``null_quantile`` of the best per-dim AUC over random anchor sets of this size."""
    g = torch.Generator().manual_seed(cfg.seed + 7919 * n_anchors)
    sets = [torch.randperm(packed.shape[0], generator=g)[:n_anchors] for _ in range(cfg.null_sets)]
    auc, _ = dim_auc(packed, d, sets, vocab_pos)
    return float(torch.quantile(auc.max(1).values.double(), cfg.null_quantile))


def select_dims(auc: torch.Tensor, cfg: DiscoveryConfig, threshold: float | torch.Tensor | None = None
                ) -> list[torch.Tensor]:
    """Dims kept per category (sorted by AUC, best first) under the configured rule."""
    order = auc.argsort(dim=1, descending=True)
    if cfg.method == "topk":
        return list(order[:, : min(cfg.k, auc.shape[1])])
    sorted_auc = auc.gather(1, order)
    if cfg.method == "tau":
        counts = (sorted_auc >= cfg.tau).sum(1)
    else:
        thr = torch.as_tensor(threshold, dtype=sorted_auc.dtype).reshape(-1, 1)
        counts = (sorted_auc > thr).sum(1).clamp(min=cfg.min_dims, max=cfg.k_max)
    return [order[c, : int(counts[c])] for c in range(len(order))]


def discover_rows(packed: torch.Tensor, d: int, anchor_rows: list[torch.Tensor],
                  cfg: DiscoveryConfig | None = None, vocab_pos: torch.Tensor | None = None
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]:
    """``(dims, signs, dim_auc, params)`` for each anchor set over packed signs ``[n, B]``."""
    cfg = cfg or DiscoveryConfig()
    if vocab_pos is None:
        vocab_pos = positive_rates(packed, d)
    auc, polarity = dim_auc(packed, d, anchor_rows, vocab_pos)
    params = asdict(cfg)
    threshold = None
    if cfg.method == "null":
        cache: dict[int, float] = {}
        for a in anchor_rows:
            if len(a) not in cache:
                cache[len(a)] = null_threshold(packed, d, len(a), cfg, vocab_pos)
        threshold = torch.tensor([cache[len(a)] for a in anchor_rows])
    kept = select_dims(auc, cfg, threshold)
    out = []
    for c, dims in enumerate(kept):
        p = dict(params)
        if threshold is not None:
            p["null_threshold"] = float(threshold[c])
        out.append((dims, polarity[c, dims], auc[c, dims], p))
    return out


def _anchor_ids(anchors, tokenizer) -> tuple[torch.Tensor, list[str]]:
    """Distinct token ids (and their text) from ids or words; words map to single tokens."""
    if isinstance(anchors, (str, bytes)):
        raise InvalidType(f"anchors is one string {anchors!r}; pass a list of words, e.g. "
                          f"[{anchors!r}], or of token ids.")
    if anchors is None:
        raise InvalidArgument("anchors is None: pass at least 10 token ids or words of the concept.")
    if isinstance(anchors, np.ndarray) and anchors.dtype.kind in "US":
        anchors = anchors.tolist()  # an array of words
    if not isinstance(anchors, (torch.Tensor, np.ndarray)):
        anchors = list(anchors)
    if len(anchors) == 0:
        raise InvalidArgument("anchors is empty: pass at least 10 token ids or words of the concept.")
    is_word = [isinstance(a, str) for a in anchors] if isinstance(anchors, list) else [False]
    if not any(is_word):
        ids = as_indices(anchors, "anchors")
        return torch.tensor(list(dict.fromkeys(ids.tolist())), dtype=torch.int64), []
    if not all(is_word):
        other = next(a for a, w in zip(anchors, is_word) if not w)
        raise InvalidType(f"anchors mix words and {type(other).__name__} values ({other!r}); pass "
                          "all words or all token ids.")
    if tokenizer is None:
        raise InvalidArgument("word anchors need the model's tokenizer: pass tokenizer=... "
                              "(bagofdims.models.load_tokenizer(name)), or pass token ids.")
    from bagofdims.categories import single_token_forms

    words = [a.strip() for a in anchors if a.strip()]  # " red" and "red" mean the word
    if not words:
        raise InvalidArgument("anchors is empty: pass at least 10 token ids or words of the concept.")
    forms = single_token_forms(words, tokenizer)
    pairs = dict((i, f) for w in dict.fromkeys(words) for i, f in forms.get(w, []))  # id -> form
    if not pairs:
        raise InvalidArgument(f"None of the anchors {words[:5]} is a single token of this model's "
                              "vocabulary; pass words that are, or token ids.")
    missing = [w for w in words if not forms.get(w)]
    if missing:
        warnings.warn(f"Anchors that are not single tokens were skipped: {missing[:10]}", stacklevel=3)
    return torch.tensor(list(pairs), dtype=torch.int64), list(pairs.values())


def discover(cache, anchors, site: str, tokenizer=None, name: str = "feature",
             method: str = "topk", k: int = 32, tau: float = 0.75, min_anchors: int = 2,
             **kwargs) -> Feature:
    """An ad-hoc feature from anchor token ids or words at one site of a sign cache.

    ``anchors``: a list (or 1-D integer tensor) of token ids, or a list of words, which need
    ``tokenizer`` (the cache model's). Duplicates count once; fewer than ``min_anchors``
    distinct anchors are refused, fewer than 10 warned about (see the module docstring).

    >>> f = discover(cache, ["red", "blue", "green", ...], site="resid.20", tokenizer=tok)
    """
    cfg = DiscoveryConfig(method=method, k=k, tau=tau, **kwargs)
    min_anchors = _whole(min_anchors, "min_anchors")
    if min_anchors < 1:
        raise InvalidArgument(f"min_anchors must be >= 1, got {min_anchors}.")
    d = cache.width(site)  # an unknown site raises NotFound listing the cache's sites
    ids, words = _anchor_ids(anchors, tokenizer)
    rows = cache.rows(ids)  # ids outside the vocabulary / cache raise OutOfRange with the range
    if len(ids) < min_anchors:
        raise InvalidArgument(
            f"{len(ids)} distinct anchor(s) but discovery needs at least min_anchors={min_anchors} "
            f"(>= {FEW_ANCHORS} recommended): one token's signs are not a concept; add anchors.")
    if len(ids) < FEW_ANCHORS:
        warnings.warn(f"Only {len(ids)} distinct anchors; features from fewer than {FEW_ANCHORS} "
                      "are noisy (add anchors, or check the held-out AUC).", stacklevel=2)
    dims, signs, auc, params = discover_rows(cache.packed(site), d, [rows], cfg)[0]
    if len(dims) == 0:
        raise InvalidArgument(
            f"No dim of {site} reaches AUC >= {tau} for these {len(ids)} anchors; lower tau, "
            "use method='topk', or give more (and more similar) anchors."
        )
    return Feature(name=name, site=site, dims=dims, signs=signs, dim_auc=auc, anchors=ids.tolist(),
                   anchor_words=words, method=cfg.method, params=params, width=d,
                   model=cache.model_name)


@dataclass
class UnsupervisedResult:
    """Features from random seeds, with the numbers the paper reports (yield, sparsity).

    ``seeds``, ``n_dims`` and ``best_auc`` cover every seed (the summary counts seeds whose
    feature came out empty); ``features`` holds only the non-empty ones, ``kept`` their
    positions in ``seeds`` and ``n_dropped`` how many seeds gave no dim.
    """

    features: list[Feature]
    seeds: torch.Tensor  # token ids
    n_dims: torch.Tensor  # dims per seed's feature (0 where it was dropped)
    best_auc: torch.Tensor  # best per-dim AUC of each seed's pseudo-anchors
    width: int
    tau: float
    kept: torch.Tensor  # positions in seeds of the features
    n_dropped: int = 0

    @property
    def yield_(self) -> float:
        """Fraction of seeds whose feature has at least one dim with AUC >= tau."""
        return float((self.best_auc >= self.tau).double().mean())

    @property
    def sparsity(self) -> float:
        """Mean fraction of the site's dims a seed's feature does not use (empty ones: all)."""
        return float(1 - self.n_dims.double().mean() / self.width)

    def summary(self) -> dict:
        return {"n_seeds": len(self.seeds), "yield": self.yield_, "sparsity": self.sparsity,
                "dims_mean": float(self.n_dims.double().mean()),
                "dims_median": float(self.n_dims.double().median()), "tau": self.tau,
                "n_features": len(self.features), "n_dropped": self.n_dropped}


def discover_unsupervised(cache, site: str, n_seeds: int = 1500, n_neighbors: int = 50,
                          method: str = "tau", k: int = 32, tau: float = 0.75, seed: int = 0,
                          tokenizer=None, **kwargs) -> UnsupervisedResult:
    """Seed token -> its ``n_neighbors`` Hamming nearest neighbours as pseudo-anchors -> discovery.

    The seeds are drawn at random from the cached tokens; a feature whose pseudo-anchors share no
    dim with AUC >= ``tau`` does not count toward the yield and is dropped (counted in
    ``n_dropped``); if every seed's is empty, raises. ``tokenizer`` (optional) names features
    by their seed token's text instead of its id.
    """
    cfg = DiscoveryConfig(method=method, k=k, tau=tau, seed=seed, **kwargs)
    d = cache.width(site)
    packed = cache.packed(site)
    n = packed.shape[0]
    n_seeds, n_neighbors = _whole(n_seeds, "n_seeds"), _whole(n_neighbors, "n_neighbors")
    if not 1 <= n_seeds <= n:
        raise InvalidArgument(f"n_seeds must be in 1..{n} (the cached tokens), got {n_seeds}.")
    if not 1 <= n_neighbors < n - 1:
        raise InvalidArgument(f"n_neighbors must be in 1..{n - 2} (cached tokens - 2), got {n_neighbors}.")
    g = torch.Generator().manual_seed(cfg.seed)
    seed_rows = torch.randperm(n, generator=g)[:n_seeds]
    _, nbrs = hamming.hamming_topk(packed[seed_rows], packed, d, k=n_neighbors + 1)
    vocab_pos = positive_rates(packed, d)
    found = discover_rows(packed, d, list(nbrs), cfg, vocab_pos)
    auc, _ = dim_auc(packed, d, list(nbrs), vocab_pos)
    seed_ids = cache.token_ids[seed_rows]
    n_dims = torch.tensor([len(f[0]) for f in found], dtype=torch.int64)
    kept = torch.nonzero(n_dims > 0).flatten()
    if len(kept) == 0:
        raise NothingFound(
            f"None of the {n_seeds} seeds' {n_neighbors} neighbours at {site} share a dim with "
            f"AUC >= {tau}: no feature to return; lower tau, use method='topk', or try another site.")
    labels = _token_text(tokenizer, seed_ids[kept])
    feats = []
    for label, i in zip(labels, kept.tolist()):
        dims, signs, dauc, params = found[i]
        feats.append(Feature(name=f"u{i}:{label}", site=site, dims=dims, signs=signs,
                             dim_auc=dauc, anchors=cache.token_ids[nbrs[i]].tolist(),
                             method=cfg.method, params=dict(params, seed_token=int(seed_ids[i])),
                             width=d, model=cache.model_name))
    n_dropped = n_seeds - len(kept)
    if n_dropped:
        log.info("%d of %d seeds at %s gave no dim with AUC >= %s; dropped.", n_dropped, n_seeds,
                 site, tau)
    return UnsupervisedResult(feats, seed_ids, n_dims, auc.max(1).values, d, tau, kept, n_dropped)


def _token_text(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(int(i)) for i in ids]
    return [tokenizer.decode([int(i)]).strip() or repr(tokenizer.decode([int(i)])) for i in ids]
