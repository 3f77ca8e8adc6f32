"""Choices made on the anchors only: site (layer), number of dims and AUC threshold by nested CV.

The outer split is the catalog's: anchors (to learn from) and held-out members (to score).
Inside it, each category's anchors are split into folds **by word** (all token forms of one word
in one fold). For every candidate ``(site, DiscoveryConfig)`` and fold, features are discovered
from the other folds' anchors and the fold's anchors are scored against vocabulary rows; the
candidate whose median over categories of the mean-over-folds AUC is highest is chosen (ties:
the earlier site, then the earlier config). Only then are the held-out members scored, once, at
the choice.

The inner loop never reads a held-out member: their rows are removed from every matrix it
builds (they are neither positives, negatives nor part of the vocabulary sign rates; an anchor
of one category that another category holds out is left out of the inner loop too), so changing
their signs cannot change the choice. The candidate with the best *held-out* median is
returned too, but only as ``upper_bound``: it is chosen on the test members and optimistic by
construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from bagofdims import stats
from bagofdims.checks import positive_int
from bagofdims.errors import InvalidArgument
from bagofdims.features.discovery import DiscoveryConfig, dim_auc, positive_rates, select_dims
from bagofdims.features.evaluation import membership, prototype_scores

__all__ = ["SelectionConfig", "Selection", "candidates", "inner_scores", "nested_select",
           "word_folds"]


@dataclass(frozen=True)
class SelectionConfig:
    """The candidates and the inner cross-validation of :func:`nested_select`."""

    ks: tuple[int, ...] = (8, 16, 32, 64, 128)  # top-k candidates
    taus: tuple[float, ...] = ()  # tau-rule candidates (per-dim AUC threshold)
    folds: int = 5  # inner folds over each category's anchor words
    negatives: int | None = 8192  # vocabulary rows drawn as inner negatives (None: every row)
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int(self.folds, "folds")
        if self.folds < 2:
            raise InvalidArgument(f"folds={self.folds}: cross-validation needs at least 2 folds.")
        if not self.ks and not self.taus:
            raise InvalidArgument("SelectionConfig has no candidates; give ks=... and/or taus=...")
        for k in self.ks:
            positive_int(k, "each k of ks")
        for t in self.taus:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.5 <= t <= 1:
                raise InvalidArgument(f"tau {t!r} of taus: pass thresholds in [0.5, 1].")
        if self.negatives is not None:
            positive_int(self.negatives, "negatives")

    def to_dict(self) -> dict:
        return asdict(self)


def candidates(sel: SelectionConfig, base: DiscoveryConfig | None = None) -> list[DiscoveryConfig]:
    """One DiscoveryConfig per candidate: ``topk`` for each k, then ``tau`` for each tau."""
    base = asdict(base or DiscoveryConfig())
    out = [DiscoveryConfig(**{**base, "method": "topk", "k": k}) for k in sel.ks]
    return out + [DiscoveryConfig(**{**base, "method": "tau", "tau": t}) for t in sel.taus]


def label(cfg: DiscoveryConfig) -> str:
    """``k=32`` or ``tau=0.7``: how a candidate is named in tables."""
    return f"k={cfg.k}" if cfg.method == "topk" else f"{cfg.method}={cfg.tau:g}"


def word_folds(groups: list[list], folds: int, seed: int = 0) -> list[torch.Tensor]:
    """Fold index of every anchor, per category: the anchors of one group (word) share a fold.

    ``groups[c][i]``: any hashable naming the word of anchor ``i`` of category ``c``. Words are
    dealt to folds in a seeded random order, so every fold gets whole words. A category with
    fewer words than ``folds`` is refused.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for c, grp in enumerate(groups):
        words = list(dict.fromkeys(grp))
        if len(words) < folds:
            raise InvalidArgument(f"category {c} has {len(words)} distinct anchor words, fewer than "
                                  f"folds={folds}; use fewer folds or more anchors.")
        order = torch.randperm(len(words), generator=g)
        fold_of_word = {words[int(j)]: r % folds for r, j in enumerate(order)}
        out.append(torch.tensor([fold_of_word[w] for w in grp], dtype=torch.int64))
    return out


def _scores(packed_rows: torch.Tensor, d: int, dims: list[torch.Tensor], signs: list[torch.Tensor]
            ) -> torch.Tensor:
    """Prototype scores ``[n, C]``; a feature without dims scores 0.5 everywhere (AUC 0.5)."""
    return prototype_scores(packed_rows, d, list(zip(dims, signs)))


def inner_scores(packed: torch.Tensor, d: int, anchor_rows: list[torch.Tensor],
                 fold_of: list[torch.Tensor], configs: list[DiscoveryConfig],
                 held_rows: list[torch.Tensor] | None = None, negatives: int | None = 8192,
                 seed: int = 0) -> torch.Tensor:
    """Mean over folds of each fold's anchor AUC: ``float64 [n_configs, C]`` at one site.

    ``held_rows`` (every category's held-out rows) are cut out of ``packed`` before anything is
    read, with any anchor that is also another category's held-out member. Inner negatives: ``negatives`` rows drawn (seeded) from the remaining rows, minus the
    category's own anchors (``None``: all of them).
    """
    n = packed.shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    if held_rows:
        keep[torch.cat([torch.as_tensor(h, dtype=torch.int64) for h in held_rows])] = False
    new_index = torch.cumsum(keep.long(), 0) - 1
    # an anchor of one category that another holds out is dropped here too (so no held-out
    # member reaches the shared choice); it still counts as an anchor at the outer evaluation
    anchor_rows = [torch.as_tensor(a, dtype=torch.int64) for a in anchor_rows]
    fold_of = [f[keep[a]] for a, f in zip(anchor_rows, fold_of)]
    anchors = [new_index[a[keep[a]]] for a in anchor_rows]
    if min(len(a) for a in anchors) < 2:
        raise InvalidArgument("a category has fewer than 2 anchors left once every held-out row "
                              "is set aside; give it more anchors.")
    inner = packed[keep]
    m, c = inner.shape[0], len(anchors)
    vocab_pos = positive_rates(inner, d)
    g = torch.Generator().manual_seed(seed)
    neg = torch.arange(m) if negatives is None or negatives >= m else \
        torch.randperm(m, generator=g)[:negatives]
    rows = torch.cat([neg, *anchors]).unique()  # the only rows scored
    local = torch.full((m,), -1, dtype=torch.int64)
    local[rows] = torch.arange(len(rows))
    is_neg = torch.zeros(len(rows), 1, dtype=torch.bool)
    is_neg[local[neg], 0] = True
    own = membership(len(rows), [local[a] for a in anchors])  # [r, C] the category's anchors
    n_folds = int(max(int(f.max()) for f in fold_of)) + 1
    total = torch.zeros(len(configs), c, dtype=torch.float64)
    seen = torch.zeros(len(configs), c, dtype=torch.float64)  # folds with a validation anchor
    packed_rows = inner[rows]
    for f in range(n_folds):
        train = [a[fold != f] for a, fold in zip(anchors, fold_of)]
        val = membership(len(rows), [local[a[fold == f]] for a, fold in zip(anchors, fold_of)])
        auc, polarity = dim_auc(inner, d, train, vocab_pos)
        population = val | (is_neg & ~own)
        for j, cfg in enumerate(configs):
            kept = select_dims(auc, cfg)
            s = _scores(packed_rows, d, kept, [polarity[i, k] for i, k in enumerate(kept)])
            a = stats.auc(s, val, population)
            ok = ~torch.isnan(a)
            total[j] += torch.where(ok, a, torch.zeros_like(a))
            seen[j] += ok.double()
    return total / seen


def _outer(packed: torch.Tensor, d: int, anchor_rows, held_rows, configs) -> dict[str, torch.Tensor]:
    """Held-out AUC (vs vocabulary, vs other categories) of every config: ``[n_configs, C]``."""
    n = packed.shape[0]
    vocab_pos = positive_rates(packed, d)
    auc, polarity = dim_auc(packed, d, anchor_rows, vocab_pos)
    anchors, held = membership(n, anchor_rows), membership(n, held_rows)
    members = anchors | held
    hard_pop = held | (members.any(1, keepdim=True) & ~members)
    out = {"held_out_auc": [], "hard_auc": [], "n_dims": []}
    for cfg in configs:
        kept = select_dims(auc, cfg)
        s = _scores(packed, d, kept, [polarity[i, k] for i, k in enumerate(kept)])
        out["held_out_auc"].append(stats.auc(s, held, ~anchors))
        out["hard_auc"].append(stats.auc(s, held, hard_pop))
        out["n_dims"].append(torch.tensor([len(k) for k in kept], dtype=torch.float64))
    return {k: torch.stack(v) for k, v in out.items()}


@dataclass
class Selection:
    """What :func:`nested_select` chose and how the choice scores on held-out members."""

    site: str  # the shared choice: one site and config for every category
    config: DiscoveryConfig
    inner_median: float  # its median inner-CV AUC over categories (anchors only)
    held_out_auc: torch.Tensor  # [C] at the shared choice (outer: scored once)
    hard_auc: torch.Tensor  # [C]
    per_category: list[tuple[str, str]]  # each category's own anchors-only choice (site, label)
    per_category_held_out_auc: torch.Tensor  # [C] each at its own choice
    inner: dict[str, dict[str, float]]  # site -> config label -> median inner AUC
    held_out: dict[str, dict[str, float]]  # site -> config label -> median held-out AUC
    upper_bound: dict = field(default_factory=dict)  # chosen on held-out members: optimistic
    settings: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.config)

    def to_dict(self) -> dict:
        return {"site": self.site, "config": asdict(self.config), "label": self.label,
                "inner_median": self.inner_median,
                "held_out_auc": self.held_out_auc.tolist(), "hard_auc": self.hard_auc.tolist(),
                "per_category": [list(p) for p in self.per_category],
                "per_category_held_out_auc": self.per_category_held_out_auc.tolist(),
                "inner": self.inner, "held_out": self.held_out, "upper_bound": self.upper_bound,
                "settings": self.settings}


def nested_select(sources: dict[str, tuple[torch.Tensor, int]], anchor_rows: list[torch.Tensor],
                  held_rows: list[torch.Tensor], groups: list[list] | None = None,
                  sel: SelectionConfig | None = None, base: DiscoveryConfig | None = None
                  ) -> Selection:
    """Choose site and discovery config on the anchors only, then score the choice held out.

    ``sources``: ``{site: (packed signs [n, B], width)}``, the same rows at every site.
    ``groups[c][i]``: the word of anchor ``i`` of category ``c`` (default: each anchor its own
    word). Returns a :class:`Selection`: the shared choice (highest median inner AUC), each
    category's own choice, their held-out AUCs, both tables, and the held-out-chosen
    ``upper_bound``, which is labelled as such and must not be reported as a result.
    """
    sel = sel or SelectionConfig()
    if not sources:
        raise InvalidArgument("sources is empty: pass {site: (packed, width)} for the candidates.")
    if len(anchor_rows) != len(held_rows) or not anchor_rows:
        raise InvalidArgument(f"{len(anchor_rows)} anchor sets but {len(held_rows)} held-out sets; "
                              "pass one of each per category.")
    groups = groups or [list(range(len(a))) for a in anchor_rows]
    if [len(g) for g in groups] != [len(a) for a in anchor_rows]:
        raise InvalidArgument("groups must name the word of every anchor, one list per category.")
    configs = candidates(sel, base)
    names = [label(c) for c in configs]
    fold_of = word_folds(groups, sel.folds, sel.seed)
    sites = list(sources)
    inner = torch.stack([inner_scores(p, d, anchor_rows, fold_of, configs, held_rows,
                                      sel.negatives, sel.seed) for p, d in sources.values()])
    outer = [_outer(p, d, anchor_rows, held_rows, configs) for p, d in sources.values()]
    held = torch.stack([o["held_out_auc"] for o in outer])  # [S, K, C]
    hard = torch.stack([o["hard_auc"] for o in outer])
    s_k = inner.shape[0] * inner.shape[1]
    med_inner = inner.median(dim=2).values  # [S, K]
    best = int(torch.argmax(med_inner.reshape(-1)))  # first maximum: earlier site, then config
    si, ki = divmod(best, len(configs))
    own = inner.permute(2, 0, 1).reshape(len(anchor_rows), s_k).argmax(1)  # per category
    per_cat = [divmod(int(i), len(configs)) for i in own]
    med_held = held.median(dim=2).values
    ub = int(torch.argmax(med_held.reshape(-1)))
    us, uk = divmod(ub, len(configs))
    table = lambda m: {s: {n: float(m[i, j]) for j, n in enumerate(names)}  # noqa: E731
                       for i, s in enumerate(sites)}
    return Selection(
        site=sites[si], config=configs[ki], inner_median=float(med_inner[si, ki]),
        held_out_auc=held[si, ki], hard_auc=hard[si, ki],
        per_category=[(sites[a], names[b]) for a, b in per_cat],
        per_category_held_out_auc=torch.stack([held[a, b, c] for c, (a, b) in enumerate(per_cat)]),
        inner=table(med_inner), held_out=table(med_held),
        upper_bound={"site": sites[us], "label": names[uk], "held_out_median": float(med_held[us, uk]),
                     "note": "chosen on held-out members: an optimistic upper bound, not a result"},
        settings=sel.to_dict())
