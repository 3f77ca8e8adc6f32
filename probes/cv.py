"""Cross-validated probe AUC per category against the whole vocabulary.

Rows of X are vocabulary tokens (states or signs at one site). For every category:

- held_out given: the anchors are training positives in every fold and are never scored; the
  held-out members are the test positives, split across folds so each is scored exactly once
  (with held_out_in_training=True, the held-out members of the other folds also train).
- held_out None: the given positives themselves are split into folds (plain k-fold CV).
- negatives: every other row (or the rows you pass), split into the same folds for every
  category by one seeded row-to-fold assignment; rows in `exclude` are neither.

All categories of a fold are trained as one batched problem with per-column row masks. Scores
are out-of-fold logits; `auc` pools them (each tested row scored once by a model that did not
train on it), `fold_auc` is per fold. Standardisation uses all rows of X (no labels involved).

With `l2_grid`, the logistic penalty is chosen per category and per outer fold by `select_l2`:
an inner k-fold CV on that fold's training rows only (anchors vs training negatives), so no
outer test row is ever read by the choice (not even by the inner standardisation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ._auc import rank_auc
from ._data import as_features
from .logistic import LogisticProbe
from bagofdims.errors import InvalidArgument

IndexSets = "Sequence[Sequence[int]] | Mapping[str, Sequence[int]]"
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # penalties (standardised inputs) tried by select_l2


@dataclass
class CVResult:
    """Per-category cross-validated results; every tensor's last axis is the category."""

    auc: torch.Tensor  # [k] float64 pooled out-of-fold test AUC
    fold_auc: torch.Tensor  # [folds, k] float64 (NaN where a fold has no test positive)
    scores: (
        torch.Tensor
    )  # [n, k] out-of-fold logits, NaN where a row was not tested for a category
    labels: (
        torch.Tensor
    )  # [n, k] bool: row is a positive (anchor or held-out member) of the category
    tested: torch.Tensor  # [n, k] bool: row was a test row for the category
    n_test_pos: torch.Tensor  # [k]
    n_test_neg: torch.Tensor  # [k]
    names: list[str] | None = None
    probes: list = field(
        default_factory=list
    )  # fitted probe per fold, when keep_probes=True ([(columns, probe)] per fold with l2_grid)
    fold: torch.Tensor | None = None  # [n, k] long: fold in which the row was tested, -1 if never
    l2: torch.Tensor | None = None  # [folds, k] logistic penalty used (chosen per fold with l2_grid)
    weights_std: torch.Tensor | None = None  # [folds, d, k] logistic weights, standardised units


@dataclass
class L2Choice:
    """What `select_l2` chose: one penalty per category and the inner scores behind it."""

    l2: torch.Tensor  # [k] float64 chosen penalty
    grid: tuple[float, ...]
    score: torch.Tensor  # [len(grid), k] mean inner fold AUC


def _check_grid(grid) -> tuple[float, ...]:
    g = tuple(float(v) for v in grid)
    if not g or any(not v > 0 for v in g) or list(g) != sorted(set(g)):
        raise InvalidArgument(f"l2 grid must be distinct positive values in ascending order; got "
                              f"{tuple(grid)} (e.g. {L2_GRID})")
    return g


def select_l2(X, labels, train, grid: Sequence[float] = L2_GRID, folds: int = 3, *,
              max_negatives: int | None = 8192, seed: int = 0) -> L2Choice:
    """Choose each category's logistic penalty by k-fold CV on its training rows only.

    X [n, d]; labels [n, k] bool (positives); train [n, k] bool: the rows category j may use
    (its anchors and training negatives). Rows outside `train` for every category are dropped
    before anything is computed (standardisation included), so they cannot change the choice.
    A row that trains another category only enters the shared, label-free standardisation.
    Inner negatives: a seeded sample of `max_negatives` training rows (None: all), the same for
    every candidate. Rule (fixed): the penalty with the highest mean inner fold AUC; exact ties
    go to the smaller penalty (the first in the ascending grid).
    """
    grid = _check_grid(grid)
    X = as_features(X)
    n, dev = X.shape[0], X.device
    labels, train = torch.as_tensor(labels, device=dev), torch.as_tensor(train, device=dev)
    if labels.dtype != torch.bool or train.dtype != torch.bool or labels.ndim != 2 \
            or labels.shape != train.shape or labels.shape[0] != n:
        raise InvalidArgument(f"labels and train must be bool [n, k] with n = {n} rows of X; got "
                              f"{tuple(labels.shape)} {labels.dtype} and {tuple(train.shape)} "
                              f"{train.dtype}")
    if max_negatives is not None and max_negatives < 1:
        raise InvalidArgument(f"max_negatives must be >= 1 or None, got {max_negatives}")
    pos, neg = labels & train, ~labels & train
    keep = pos.any(1)
    cand = neg.any(1).nonzero().flatten()
    if max_negatives is not None and len(cand) > max_negatives:
        g = torch.Generator().manual_seed(seed + 17)
        cand = cand[torch.randperm(len(cand), generator=g)[:max_negatives].to(dev)]
    keep[cand] = True
    rows = keep.nonzero().flatten()
    Xi, pos, neg = X[rows], pos[rows], neg[rows]
    k = labels.shape[1]
    pos_ids = [pos[:, j].nonzero().flatten() for j in range(k)]
    neg_ids = [neg[:, j].nonzero().flatten() for j in range(k)]
    score = torch.stack([
        torch.nanmean(cross_validate(Xi, pos_ids, None, folds, negatives=neg_ids, seed=seed,
                                     probe=lambda v=v: LogisticProbe(l2=v)).fold_auc.cpu(), 0)
        for v in grid])
    best = torch.nan_to_num(score, nan=-1.0).argmax(0)  # first maximum: the smaller penalty
    return L2Choice(l2=torch.tensor(grid, dtype=torch.float64)[best], grid=grid, score=score)


def _index_sets(sets, n: int, what: str, names: list[str] | None) -> list[torch.Tensor]:
    if isinstance(sets, Mapping):
        keys = list(sets.keys())
        if names is not None and keys != names:
            raise InvalidArgument(
                f"{what} must have the same category names, in the same order, as the positives"
            )
        sets = [sets[k_] for k_ in keys]
    out = []
    for j, s in enumerate(sets):
        t = torch.as_tensor(
            list(s) if not isinstance(s, torch.Tensor) else s, dtype=torch.long
        ).flatten()
        if t.numel() and (t.min() < 0 or t.max() >= n):
            raise InvalidArgument(
                f"{what}[{j}] has row ids outside [0, {n}); ids must index rows of X (token ids)"
            )
        out.append(torch.unique(t))
    return out


def _rows_mask(sets: list[torch.Tensor], n: int, device) -> torch.Tensor:
    m = torch.zeros(n, len(sets), dtype=torch.bool)
    for j, s in enumerate(sets):
        m[s, j] = True
    return m.to(device)


def cross_validate(
    X,
    positives,
    held_out=None,
    folds: int = 5,
    *,
    probe: Callable[[], object] | None = None,
    held_out_in_training: bool = False,
    negatives=None,
    exclude=None,
    seed: int = 0,
    keep_probes: bool = False,
    l2_grid: Sequence[float] | None = None,
    inner_folds: int = 3,
    inner_negatives: int | None = 8192,
) -> CVResult:
    """Cross-validate one probe per category, all categories batched.

    X: [vocab, d] states or ±1 signs (torch or numpy, any device).
    positives: per category, row ids of training positives (the anchors) — a list of id lists or
        a {name: ids} dict. Without `held_out` they are also what gets split into test folds.
    held_out: per category, row ids of test positives (same order / names); never anchors.
    probe: factory returning an unfitted probe with fit(X, Y, mask=...) and decision_function;
        default LogisticProbe().
    negatives: optional per-category row ids used as negatives (e.g. other categories' members
        for a hard negative set); default every row that is not a positive of the category.
    exclude: optional per-category row ids left out of both sides (e.g. case variants).
    l2_grid: choose a LogisticProbe penalty per category in every outer fold with `select_l2`
        (`inner_folds`, `inner_negatives`) on that fold's training rows; not with `probe`.
    """
    X = as_features(X)
    n, dev = X.shape[0], X.device
    if folds < 2:
        raise InvalidArgument(f"folds must be >= 2, got {folds}")
    names = list(positives.keys()) if isinstance(positives, Mapping) else None
    pos = _index_sets(positives, n, "positives", None)
    k = len(pos)
    if k == 0:
        raise InvalidArgument("positives is empty: give at least one category")

    def per_cat(sets, what):
        if sets is None:
            return None
        out = _index_sets(sets, n, what, names)
        if len(out) != k:
            raise InvalidArgument(f"{what} has {len(out)} categories but positives has {k}")
        return out

    held = per_cat(held_out, "held_out")
    neg_sets = per_cat(negatives, "negatives")
    excl = per_cat(exclude, "exclude")
    gen = torch.Generator().manual_seed(seed)

    anchors = _rows_mask(pos, n, dev)
    if held is not None:
        candidates = held
        for j in range(k):
            if not len(pos[j]):
                raise InvalidArgument(
                    f"category {j}: no anchors; the probe needs training positives"
                )
            common = set(pos[j].tolist()) & set(held[j].tolist())
            if common:
                raise InvalidArgument(
                    f"category {j}: row ids {sorted(common)[:5]} are both anchors and held-out; "
                    "anchors are training-only, remove them from held_out"
                )
            if not len(held[j]):
                raise InvalidArgument(
                    f"category {j}: held_out is empty; give test positives or pass held_out=None"
                )
    else:
        candidates = pos
        small = [j for j in range(k) if len(pos[j]) < 2]
        if small:
            raise InvalidArgument(
                f"categories {small[:10]} have < 2 positives; k-fold CV needs 2 or more"
            )
    # Per category, its test-candidate positives are dealt round-robin into folds in random order.
    posfold = torch.full((n, k), -1, dtype=torch.long)
    for j, c in enumerate(candidates):
        posfold[c[torch.randperm(len(c), generator=gen)], j] = (
            torch.arange(len(c)) % folds
        )
    posfold = posfold.to(dev)
    is_cand = posfold >= 0
    labels = anchors | is_cand
    if neg_sets is not None:
        neg_ok = _rows_mask(neg_sets, n, dev) & ~labels
    else:
        neg_ok = ~labels
    if excl is not None:
        ex = _rows_mask(excl, n, dev)
        neg_ok &= ~ex
        if (ex & labels).any():
            raise InvalidArgument(
                "exclude overlaps the positives/held-out of the same category; drop those ids from one"
            )
    rowfold = (torch.randperm(n, generator=gen) % folds).to(dev)
    train_cands = held is None or held_out_in_training

    if l2_grid is not None:
        if probe is not None:
            raise InvalidArgument("give either probe= or l2_grid= (which trains LogisticProbes "
                                  "with a penalty chosen per fold), not both")
        l2_grid = _check_grid(l2_grid)
    factory = probe if probe is not None else LogisticProbe
    l2_used = torch.full((folds, k), float("nan"), dtype=torch.float64)
    W_std = None
    scores = torch.full((n, k), float("nan"), dtype=torch.float32, device=dev)
    tested = torch.zeros(n, k, dtype=torch.bool, device=dev)
    fold_of = torch.full((n, k), -1, dtype=torch.long, device=dev)
    fold_auc = torch.full((folds, k), float("nan"), dtype=torch.float64, device=dev)
    kept = []
    for f in range(folds):
        test_pos = posfold == f
        train_pos = anchors if held is not None else torch.zeros_like(anchors)
        if train_cands:
            train_pos = train_pos | (is_cand & ~test_pos)
        neg_test = neg_ok & (rowfold == f)[:, None]
        train = train_pos | (neg_ok & ~neg_test)
        test = test_pos | neg_test
        if l2_grid is None:
            p = factory().fit(X, labels, mask=train)
            s = p.decision_function(X).reshape(n, k).float()
            W = p.weights_std.reshape(-1, k) if isinstance(p, LogisticProbe) else None
            if isinstance(p, LogisticProbe):
                l2_used[f] = p.l2
        else:
            choice = select_l2(X, labels, train, l2_grid, inner_folds,
                               max_negatives=inner_negatives, seed=seed + f)
            s, W, p = _fit_by_penalty(X, labels, train, choice.l2)
            l2_used[f] = choice.l2
        if W is not None:
            if W_std is None:
                W_std = torch.zeros(folds, *W.shape, dtype=W.dtype, device=W.device)
            W_std[f] = W
        scores = torch.where(test, s, scores)
        tested |= test
        fold_of = torch.where(test, f, fold_of)
        fold_auc[f] = rank_auc(s, labels, test)
        if keep_probes:
            kept.append(p)
    pooled = rank_auc(torch.nan_to_num(scores, nan=0.0), labels, tested)
    return CVResult(
        auc=pooled,
        fold_auc=fold_auc,
        scores=scores,
        labels=labels,
        tested=tested,
        n_test_pos=(tested & labels).sum(0),
        n_test_neg=(tested & ~labels).sum(0),
        names=names,
        probes=kept,
        fold=fold_of,
        l2=l2_used,
        weights_std=W_std,
    )


def _fit_by_penalty(X, labels, train, l2: torch.Tensor):
    """One batched LogisticProbe per distinct penalty over the categories that chose it:
    (logits [n, k], standardised weights [d, k], the probes as [(columns, probe)])."""
    n, k = labels.shape
    s = torch.empty(n, k, dtype=torch.float32, device=X.device)
    W = torch.empty(X.shape[1], k, dtype=torch.float32, device=X.device)
    fitted = []
    for v in torch.unique(l2).tolist():
        cols = (l2 == v).nonzero().flatten().to(X.device)
        p = LogisticProbe(l2=v).fit(X, labels[:, cols], mask=train[:, cols])
        s[:, cols] = p.decision_function(X).reshape(n, -1).float()
        W[:, cols] = p.weights_std.reshape(X.shape[1], -1).float()
        fitted.append((cols, p))
    return s, W, fitted
