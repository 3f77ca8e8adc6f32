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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from bagofdims.signs import bits, hamming
from bagofdims.features.feature import Feature
from bagofdims.errors import InvalidArgument

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
        if self.k < 1 or not 0.5 <= self.tau <= 1:
            raise InvalidArgument("k must be >= 1 and tau in [0.5, 1].")


def positive_rates(packed: torch.Tensor, d: int, chunk: int = 16384) -> torch.Tensor:
    """Count of positive signs per dim over all rows of ``packed`` (chunked unpack)."""
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
    n = packed.shape[0]
    if vocab_pos is None:
        vocab_pos = positive_rates(packed, d)
    sizes = torch.tensor([len(a) for a in anchor_rows], dtype=torch.float64)
    if (sizes == 0).any():
        raise InvalidArgument("An anchor set is empty; give each category at least one anchor token.")
    flat = torch.cat([torch.as_tensor(a, dtype=torch.int64) for a in anchor_rows])
    seg = torch.repeat_interleave(torch.arange(len(anchor_rows)), sizes.to(torch.int64))
    rows = (bits.unpack_signs(packed[flat], d, torch.int8) > 0).to(torch.float64)
    pos = torch.zeros(len(anchor_rows), d, dtype=torch.float64).index_add_(0, seg, rows)
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


def _anchor_ids(cache, anchors, tokenizer) -> tuple[list[int], list[str]]:
    """Token ids (and their text) from ids or words; words are mapped to single tokens."""
    if anchors is None or len(anchors) == 0:
        raise InvalidArgument("anchors is empty: pass at least 10 token ids or words of the concept.")
    if all(isinstance(a, str) for a in anchors):
        from bagofdims.categories import single_token_forms

        if tokenizer is None:
            from bagofdims.models import load_tokenizer

            tokenizer = load_tokenizer(cache.model_name)
        anchors = [a.strip() for a in anchors if a.strip()]  # " red" and "red" mean the word
        if not anchors:
            raise InvalidArgument("anchors is empty: pass at least 10 token ids or words of the concept.")
        forms = single_token_forms(anchors, tokenizer)
        ids = [i for w in anchors for i, _ in forms.get(w, [])]
        missing = [w for w in anchors if not forms.get(w)]
        if not ids:
            raise InvalidArgument(
                f"None of the anchors {list(anchors)[:5]} is a single token of this model's "
                "vocabulary; pass words that are, or token ids."
            )
        words = [f for w in anchors for _, f in forms.get(w, [])]
        if missing:
            import warnings

            warnings.warn(f"Anchors that are not single tokens were skipped: {missing[:10]}",
                          stacklevel=3)
        return ids, words
    ids = [int(a) for a in anchors]
    return ids, []


def discover(cache, anchors, site: str, tokenizer=None, name: str = "feature",
             method: str = "topk", k: int = 32, tau: float = 0.75, **kwargs) -> Feature:
    """An ad-hoc feature from anchor token ids or words at one site of a sign cache.

    >>> f = discover(cache, ["red", "blue", "green", ...], site="resid.20")
    """
    cfg = DiscoveryConfig(method=method, k=k, tau=tau, **kwargs)
    ids, words = _anchor_ids(cache, anchors, tokenizer)
    rows = cache.rows(ids)
    d = cache.width(site)
    dims, signs, auc, params = discover_rows(cache.packed(site), d, [rows], cfg)[0]
    if len(dims) == 0:
        raise InvalidArgument(
            f"No dim of {site} reaches AUC >= {tau} for these {len(ids)} anchors; lower tau, "
            "use method='topk', or give more (and more similar) anchors."
        )
    return Feature(name=name, site=site, dims=dims, signs=signs, dim_auc=auc, anchors=ids,
                   anchor_words=words, method=cfg.method, params=params, width=d,
                   model=cache.model_name)


@dataclass
class UnsupervisedResult:
    """Features from random seeds, with the numbers the paper reports (yield, sparsity)."""

    features: list[Feature]
    seeds: torch.Tensor  # token ids
    n_dims: torch.Tensor  # dims per feature
    best_auc: torch.Tensor  # best per-dim AUC of each feature
    width: int
    tau: float

    @property
    def yield_(self) -> float:
        """Fraction of seeds whose feature has at least one dim with AUC >= tau."""
        return float((self.best_auc >= self.tau).double().mean())

    @property
    def sparsity(self) -> float:
        """Mean fraction of the site's dims a feature does not use."""
        return float(1 - self.n_dims.double().mean() / self.width)

    def summary(self) -> dict:
        return {"n_seeds": len(self.seeds), "yield": self.yield_, "sparsity": self.sparsity,
                "dims_mean": float(self.n_dims.double().mean()),
                "dims_median": float(self.n_dims.double().median()), "tau": self.tau}


def discover_unsupervised(cache, site: str, n_seeds: int = 1500, n_neighbors: int = 50,
                          method: str = "tau", k: int = 32, tau: float = 0.75, seed: int = 0,
                          tokenizer=None, **kwargs) -> UnsupervisedResult:
    """Seed token -> its ``n_neighbors`` Hamming nearest neighbours as pseudo-anchors -> discovery.

    The seeds are drawn at random from the cached tokens; a feature whose pseudo-anchors share no
    dim with AUC >= ``tau`` does not count toward the yield.
    """
    packed = cache.packed(site)
    d = cache.width(site)
    n = packed.shape[0]
    if not 1 <= n_seeds <= n:
        raise InvalidArgument(f"n_seeds must be in 1..{n} (the cached tokens).")
    g = torch.Generator().manual_seed(seed)
    seed_rows = torch.randperm(n, generator=g)[:n_seeds]
    _, nbrs = hamming.hamming_topk(packed[seed_rows], packed, d, k=n_neighbors + 1)
    cfg = DiscoveryConfig(method=method, k=k, tau=tau, seed=seed, **kwargs)
    vocab_pos = positive_rates(packed, d)
    found = discover_rows(packed, d, list(nbrs), cfg, vocab_pos)
    auc, _ = dim_auc(packed, d, list(nbrs), vocab_pos)
    seed_ids = cache.token_ids[seed_rows]
    labels = _token_text(tokenizer, seed_ids)
    feats = []
    for i, (dims, signs, dauc, params) in enumerate(found):
        feats.append(Feature(name=f"u{i}:{labels[i]}", site=site, dims=dims, signs=signs,
                             dim_auc=dauc, anchors=cache.token_ids[nbrs[i]].tolist(),
                             method=cfg.method, params=dict(params, seed_token=int(seed_ids[i])),
                             width=d, model=cache.model_name))
    n_dims = torch.tensor([len(f) for f in feats])
    return UnsupervisedResult(feats, seed_ids, n_dims, auc.max(1).values, d, tau)


def _token_text(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(int(i)) for i in ids]
    return [tokenizer.decode([int(i)]).strip() or repr(tokenizer.decode([int(i)])) for i in ids]
