"""Evidence for features: null references, bootstrap intervals and p-values, all batched.

A held-out AUC alone says little: whole listed words differ from the rest of a vocabulary (word
pieces, code, other scripts) in ways that have nothing to do with any one category. So every
feature is set beside what the same pipeline gives for sets that are not categories, and beside
another source of features:

- **random tokens**: anchors and held-out members drawn from the cached vocabulary (every row),
  or from the rows passed as ``token_rows``: a subset cache's background sample
  (:func:`bagofdims.signs.subset.token_population`), never from its category members;
- **random listed words**: anchors and held-out members drawn from the pool of every category's
  members (a pseudo-category of real words): the reference a category must beat to show it is
  more than "a listed word";
- **hard negatives**: the held-out members scored against the other categories' members only
  (``hard_auc``), with its own listed-word null (a pseudo-category's held-out members against
  the rest of the pool, about 0.5);
- **another sign source** (:func:`reference_evidence`): the same anchors, discovery and scoring
  on other signs of the same tokens, e.g. the ``embed`` site (the embedding matrix): what the
  studied site adds over re-encoding the embeddings, per feature and across features.

Each null is drawn ``n_draws`` times with the real sizes, through the same discovery and
scoring. A feature's p-value against a null is ``(1 + #{draws with AUC >= the feature's}) / (1 +
n_draws)``; it is **above null** when both its random-token and random-listed-word p-values are
below ``alpha``. Intervals: over held-out members (:func:`bootstrap_interval`; negatives and
anchors fixed, so member sampling only), and over categories (:func:`category_interval`: the
median over categories, resampling categories and, within each, its members). Nothing here
looks at held-out members to choose anything (choices: :mod:`bagofdims.features.selection`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from bagofdims import stats
from bagofdims.checks import positive_int
from bagofdims.errors import InvalidArgument
from bagofdims.features.discovery import DiscoveryConfig, discover_rows, positive_rates
from bagofdims.features.evaluation import evaluate_prototypes, membership, prototype_scores

NULLS = ("token", "listed")


@dataclass(frozen=True)
class EvidenceConfig:
    """How references and intervals are computed (recorded in the catalog)."""

    n_draws: int = 50  # null sets drawn per kind and site
    n_boot: int = 1000  # bootstrap resamples of the held-out members
    level: float = 0.95  # interval coverage
    seed: int = 0
    alpha: float = 0.05  # a feature is above null when both null p-values are below this

    def __post_init__(self) -> None:
        positive_int(self.n_draws, "n_draws")
        positive_int(self.n_boot, "n_boot")
        if not 0.5 < self.level < 1:
            raise InvalidArgument(f"level={self.level}: pass a coverage in (0.5, 1), e.g. 0.95.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not 0 < self.alpha < 1:
            raise InvalidArgument(f"alpha={self.alpha!r}: pass a level in (0, 1), e.g. 0.05.")

    def to_dict(self) -> dict:
        return asdict(self)


def member_wins(scores: torch.Tensor, held: torch.Tensor, negatives: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per held-out member, the share of negatives it outscores (ties half): ``(u, valid)``.

    ``scores``, ``held``, ``negatives``: ``[n, C]``. Returns ``u`` float64 ``[C, m]`` (``m`` the
    largest held-out count, padded) and ``valid`` bool ``[C, m]``; the mean of a row's valid
    ``u`` is that column's AUC (Mann-Whitney). Members are in row order, so two calls with the
    same ``held`` align member by member (paired comparisons).
    """
    s = scores.to(torch.float64).T.contiguous()  # [C, n]
    neg = torch.where(negatives.T, s, torch.full_like(s, float("inf"))).sort(dim=1).values.contiguous()
    n_neg = negatives.sum(0).to(torch.float64)  # [C]
    counts = held.sum(0)
    m = int(counts.max()) if len(counts) else 0
    # held-out scores of each column, left-aligned and padded
    order = torch.argsort((~held.T).to(torch.int8), dim=1, stable=True)[:, :m]
    vals = s.gather(1, order)
    valid = torch.arange(m)[None, :] < counts[:, None]
    below = torch.searchsorted(neg, vals.contiguous(), side="left").to(torch.float64)
    upto = torch.searchsorted(neg, vals.contiguous(), side="right").to(torch.float64)
    u = (below + upto) / (2 * n_neg.clamp(min=1)[:, None])
    return torch.where(valid, u, torch.zeros_like(u)), valid


def bootstrap_interval(u: torch.Tensor, valid: torch.Tensor, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval of each row's mean over resampled valid members: ``(lo, hi)`` [C].

    Rows with fewer than two members get NaN (no spread to resample). For a paired difference
    of two AUCs on the same members pass ``u_a - u_b``.
    """
    c, m = u.shape
    counts = valid.sum(1)
    nan = torch.full((c,), float("nan"), dtype=torch.float64)
    if m == 0:
        return nan, nan.clone()
    g = torch.Generator().manual_seed(seed)
    keep = (torch.arange(m)[None, None, :] < counts[:, None, None]).to(torch.float64)
    means = []
    for start in range(0, n_boot, 250):  # bounded memory: [C, 250, m] a block
        b = min(250, n_boot - start)
        idx = (torch.rand(c, b, m, generator=g) * counts.clamp(min=1)[:, None, None]).long()
        sample = u.gather(1, idx.reshape(c, -1)).reshape(c, b, m)
        means.append((sample * keep).sum(-1) / counts.clamp(min=1)[:, None])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    bounds = torch.quantile(torch.cat(means, 1), q, dim=1)
    ok = counts > 1
    return torch.where(ok, bounds[0], nan), torch.where(ok, bounds[1], nan)


def category_interval(u: torch.Tensor, valid: torch.Tensor | None = None, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Median over categories with a two-level bootstrap interval: ``(median, lo, hi)``.

    ``u``: per-member wins ``[C, m]`` with ``valid`` (from :func:`member_wins`; each resample
    draws categories with replacement, then each drawn category's members), or one value per
    category ``[C]`` (``valid`` None: categories only). NaN categories are left out.
    """
    u = torch.as_tensor(u, dtype=torch.float64)
    if valid is None:
        u, valid = u.reshape(-1, 1), torch.ones(u.numel(), 1, dtype=torch.bool)
    counts = valid.sum(1)
    value = (u * valid).sum(1) / counts.clamp(min=1)
    ok = (counts > 0) & ~torch.isnan(value)
    u, valid, counts, value = u[ok], valid[ok], counts[ok], value[ok]
    c, m = u.shape
    if c == 0:
        return float("nan"), float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    stats_ = []
    for start in range(0, n_boot, 100):  # [100, C, m] a block
        b = min(100, n_boot - start)
        cats = torch.randint(0, c, (b, c), generator=g)
        n = counts[cats].clamp(min=1)  # [b, C]
        idx = (torch.rand(b, c, m, generator=g) * n[..., None]).long()
        sample = u[cats].gather(2, idx)  # [b, C, m]
        keep = torch.arange(m)[None, None, :] < n[..., None]
        means = (sample * keep).sum(-1) / n
        stats_.append(means.median(dim=1).values if c > 1 else means[:, 0])
    boots = torch.cat(stats_)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(boots, q).tolist()
    return float(value.median()), lo, hi


def null_draws(packed: torch.Tensor, d: int, kind: str, n_anchors: int, n_held: int,
               cfg: DiscoveryConfig, ev: EvidenceConfig, pool: torch.Tensor | None = None,
               vocab_pos: torch.Tensor | None = None,
               token_rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Held-out AUCs of ``ev.n_draws`` null sets of one kind at one site.

    ``kind="token"`` draws from ``token_rows`` (default: every row); ``"listed"`` from ``pool``
    (the rows of all categories' members). Same discovery (``cfg``) and scoring as the real
    features. Returns
    ``float64 [n_draws]`` tensors ``held_out_auc`` and ``hard_auc`` (held-out members against
    the pool rows outside the set, the hard-negative reference: only for ``"listed"``, NaN
    for ``"token"``).
    """
    if kind not in NULLS:
        raise InvalidArgument(f"kind='{kind}': use one of {NULLS}.")
    n = packed.shape[0]
    source = torch.as_tensor(pool).unique() if kind == "listed" else \
        torch.arange(n) if token_rows is None else _rows(token_rows, n)
    need = n_anchors + n_held
    if len(source) < need:
        what = "the token population (a subset cache's background sample)" \
            if kind == "token" and token_rows is not None else "the pool"
        raise InvalidArgument(f"The {kind} null needs {need} distinct rows to draw from, {what} "
                              f"has {len(source)}; give more categories, fewer anchors or (a "
                              "subset cache) a larger --background.")
    g = torch.Generator().manual_seed(ev.seed + (0 if kind == "token" else 7_777))
    picks = [source[torch.randperm(len(source), generator=g)[:need]] for _ in range(ev.n_draws)]
    anchors, held = [p[:n_anchors] for p in picks], [p[n_anchors:] for p in picks]
    found = discover_rows(packed, d, anchors, cfg, vocab_pos)
    scores = prototype_scores(packed, d, [(f[0], f[1]) for f in found])
    a, h = membership(n, anchors), membership(n, held)
    out = {"held_out_auc": stats.auc(scores, h, ~a)}
    if kind == "listed":
        in_pool = torch.zeros(n, 1, dtype=torch.bool)
        in_pool[source] = True
        out["hard_auc"] = stats.auc(scores, h, h | (in_pool & ~a))
    else:
        out["hard_auc"] = torch.full((ev.n_draws,), float("nan"), dtype=torch.float64)
    return out


def null_aucs(packed: torch.Tensor, d: int, kind: str, n_anchors: int, n_held: int,
              cfg: DiscoveryConfig, ev: EvidenceConfig, pool: torch.Tensor | None = None,
              vocab_pos: torch.Tensor | None = None,
              token_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Held-out AUC (against the vocabulary) of the null sets of :func:`null_draws`."""
    return null_draws(packed, d, kind, n_anchors, n_held, cfg, ev, pool, vocab_pos,
                      token_rows)["held_out_auc"]


def _rows(rows, n: int) -> torch.Tensor:
    """Distinct rows of a ``packed`` of ``n`` rows, sorted (refuses any outside it)."""
    rows = torch.as_tensor(rows, dtype=torch.int64).unique()
    if len(rows) and not 0 <= int(rows[0]) <= int(rows[-1]) < n:
        raise InvalidArgument(f"token_rows must be rows of packed (0..{n - 1}), got "
                              f"{int(rows[0])}..{int(rows[-1])}; map token ids with cache.rows().")
    return rows


def p_value(null: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """``(1 + #{null >= observed}) / (1 + n)`` per observed value (``float64``, never 0)."""
    null = torch.as_tensor(null, dtype=torch.float64).reshape(-1)
    obs = torch.as_tensor(observed, dtype=torch.float64).reshape(-1)
    return (1 + (null[None, :] >= obs[:, None]).sum(1)).double() / (1 + len(null))


def site_evidence(packed: torch.Tensor, d: int, found: list, anchor_rows: list[torch.Tensor],
                  held_rows: list[torch.Tensor], cfg: DiscoveryConfig, ev: EvidenceConfig,
                  held_out_auc: torch.Tensor, vocab_pos: torch.Tensor | None = None,
                  hard_auc: torch.Tensor | None = None,
                  token_rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """References, intervals and p-values for the features of one site (one entry per category).

    ``token_rows``: the rows the random-token null draws from (default: every row).

    Returns ``float64 [C]`` tensors: ``held_out_auc_lo`` / ``_hi`` and ``hard_auc_lo`` / ``_hi``
    (bootstrap over held-out members), ``null_token_auc`` / ``null_listed_auc`` (median of each
    null, the same for every category of the site), ``null_listed_q05`` / ``_q95``,
    ``null_listed_hard_auc`` (median hard AUC of the pseudo-categories), ``p_token`` /
    ``p_listed`` / ``p_hard`` (``hard_auc`` against the pseudo-categories' hard AUCs; needs
    ``hard_auc``), ``above_null`` (1.0 when ``p_token`` and ``p_listed`` are below
    ``ev.alpha``, else 0.0) and ``null_auc`` (the stricter median).
    """
    n, c = packed.shape[0], len(found)
    scores = prototype_scores(packed, d, [(f[0], f[1]) for f in found])
    anchors, held = membership(n, anchor_rows), membership(n, held_rows)
    members = anchors | held
    u, valid = member_wins(scores, held, ~anchors & ~held)
    lo, hi = bootstrap_interval(u, valid, ev.n_boot, ev.level, ev.seed)
    others = members.any(1, keepdim=True) & ~members  # other categories' members
    uh, valid_h = member_wins(scores, held, others)
    hlo, hhi = bootstrap_interval(uh, valid_h, ev.n_boot, ev.level, ev.seed)
    n_anchors = int(torch.tensor([len(a) for a in anchor_rows]).median())
    n_held = int(torch.tensor([len(h) for h in held_rows]).median())
    pool = torch.cat([torch.as_tensor(r) for r in anchor_rows + held_rows])
    out = {"held_out_auc_lo": lo, "held_out_auc_hi": hi, "hard_auc_lo": hlo, "hard_auc_hi": hhi}
    auc = held_out_auc.to(torch.float64)
    for kind in NULLS:
        null = null_draws(packed, d, kind, n_anchors, n_held, cfg, ev, pool, vocab_pos, token_rows)
        draws = null["held_out_auc"]
        out[f"null_{kind}_auc"] = draws.median().expand(c).clone()
        out[f"p_{kind}"] = p_value(draws, auc)
        if kind == "listed":
            q = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=torch.float64))
            out["null_listed_q05"] = q[0].expand(c).clone()
            out["null_listed_q95"] = q[1].expand(c).clone()
            hard = null["hard_auc"]
            out["null_listed_hard_auc"] = hard.median().expand(c).clone()
            if hard_auc is not None:
                out["p_hard"] = p_value(hard, hard_auc)
    out["null_auc"] = torch.maximum(out["null_token_auc"], out["null_listed_auc"])
    out["above_null"] = ((out["p_token"] < ev.alpha) & (out["p_listed"] < ev.alpha)).double()
    return out


def reference_evidence(ref_packed: torch.Tensor, ref_d: int, anchor_rows: list[torch.Tensor],
                       held_rows: list[torch.Tensor], cfg: DiscoveryConfig,
                       ev: EvidenceConfig | None = None, scores: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
    """The same features discovered on another sign source (e.g. the ``embed`` site's signs).

    ``ref_packed`` holds the packed signs of the same rows (tokens) as the studied site. Returns
    ``float64 [C]``: ``ref_held_out_auc`` / ``ref_hard_auc``, and with ``scores`` (the studied
    features' prototype scores ``[n, C]``) the paired difference ``ref_gain`` (studied minus
    reference held-out AUC, on the same held-out members and negatives) with its member
    bootstrap interval ``ref_gain_lo`` / ``_hi`` (``ev`` or the defaults), plus ``u_gain`` /
    ``valid`` (per-member differences, for :func:`category_interval`).
    """
    ev = ev or EvidenceConfig()
    n = ref_packed.shape[0]
    found = discover_rows(ref_packed, ref_d, anchor_rows, cfg)
    res = evaluate_prototypes(ref_packed, ref_d, [(f[0], f[1]) for f in found], anchor_rows,
                              held_rows)
    out = {"ref_held_out_auc": res["held_out_auc"].double(), "ref_hard_auc": res["hard_auc"].double()}
    if scores is None:
        return out
    if scores.shape != (n, len(anchor_rows)):
        raise InvalidArgument(f"scores of shape {tuple(scores.shape)} do not match the reference's "
                              f"{n} rows and {len(anchor_rows)} categories; score the same rows.")
    anchors, held = membership(n, anchor_rows), membership(n, held_rows)
    neg = ~anchors & ~held
    ref_scores = prototype_scores(ref_packed, ref_d, [(f[0], f[1]) for f in found])
    u_a, valid = member_wins(scores, held, neg)
    u_b, _ = member_wins(ref_scores, held, neg)
    gain = u_a - u_b
    lo, hi = bootstrap_interval(gain, valid, ev.n_boot, ev.level, ev.seed)
    out.update(ref_gain=(gain * valid).sum(1) / valid.sum(1).clamp(min=1), ref_gain_lo=lo,
               ref_gain_hi=hi, u_gain=gain, valid=valid)
    return out


def evaluate_site(packed: torch.Tensor, d: int, anchor_rows: list[torch.Tensor],
                  held_rows: list[torch.Tensor], cfg: DiscoveryConfig,
                  ev: EvidenceConfig | None = None, token_rows: torch.Tensor | None = None
                  ) -> list[tuple[tuple, dict, float]]:
    """Discover and evaluate one feature per category at one site (``token_rows``: the rows
    the random-token null draws from, default every row).

    Returns, per category, ``((dims, signs, dim_auc, params), metrics, threshold)``: the
    held-out AUC against the vocabulary and against other categories' members, the anchors'
    AUC, the mean per-dim AUC on the anchors, and with ``ev`` the references, intervals,
    p-values and above-null decision of :func:`site_evidence`.
    """
    vocab_pos = positive_rates(packed, d)
    found = discover_rows(packed, d, anchor_rows, cfg, vocab_pos)
    res = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchor_rows, held_rows)
    extra = site_evidence(packed, d, found, anchor_rows, held_rows, cfg, ev, res["held_out_auc"],
                          vocab_pos, res["hard_auc"], token_rows) if ev is not None else {}
    out = []
    for c, f in enumerate(found):
        metrics = {k: float(v[c]) for k, v in {**res, **extra}.items() if k != "threshold"}
        metrics["mean_dim_auc"] = float(f[2].mean()) if len(f[2]) else float("nan")
        out.append((f, metrics, float(res["threshold"][c])))
    return out
