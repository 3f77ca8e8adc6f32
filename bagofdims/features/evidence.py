"""Evidence for features: null references, bootstrap intervals and p-values, all batched.

A held-out AUC alone says little: whole listed words differ from the rest of a vocabulary (word
pieces, code, other scripts) in ways that have nothing to do with any one category. So every
feature is set beside what the same pipeline gives for sets that are not categories:

- **random tokens**: anchors and held-out members drawn from the whole vocabulary;
- **random listed words**: anchors and held-out members drawn from the pool of every category's
  members (a pseudo-category of real words): the reference a category must beat to show it is
  more than "a listed word";

each drawn ``n_draws`` times with the real sizes, run through the same discovery and scoring.
A feature's p-value against a null is ``(1 + #{draws with AUC >= the feature's}) / (1 +
n_draws)``. Intervals resample the held-out members (the negatives and the anchors are held
fixed, so they show member sampling only). Nothing here looks at held-out members to choose
anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

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

    def __post_init__(self) -> None:
        positive_int(self.n_draws, "n_draws")
        positive_int(self.n_boot, "n_boot")
        if not 0.5 < self.level < 1:
            raise InvalidArgument(f"level={self.level}: pass a coverage in (0.5, 1), e.g. 0.95.")

    def to_dict(self) -> dict:
        return asdict(self)


def member_wins(scores: torch.Tensor, held: torch.Tensor, negatives: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per held-out member, the share of negatives it outscores (ties half): ``(u, valid)``.

    ``scores``, ``held``, ``negatives``: ``[n, C]``. Returns ``u`` float64 ``[C, m]`` (``m`` the
    largest held-out count, padded) and ``valid`` bool ``[C, m]``; the mean of a row's valid
    ``u`` is that column's AUC (Mann-Whitney).
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

    Rows with fewer than two members get NaN (no spread to resample).
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


def null_aucs(packed: torch.Tensor, d: int, kind: str, n_anchors: int, n_held: int,
              cfg: DiscoveryConfig, ev: EvidenceConfig, pool: torch.Tensor | None = None,
              vocab_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Held-out AUC of ``ev.n_draws`` null sets of one kind at one site: ``float64 [n_draws]``.

    ``kind="token"`` draws from every row; ``"listed"`` from ``pool`` (the rows of all
    categories' members). Same discovery (``cfg``) and scoring as the real features.
    """
    if kind not in NULLS:
        raise InvalidArgument(f"kind='{kind}': use one of {NULLS}.")
    source = torch.arange(packed.shape[0]) if kind == "token" else torch.as_tensor(pool).unique()
    need = n_anchors + n_held
    if len(source) < need:
        raise InvalidArgument(f"The {kind} null needs {need} distinct rows to draw from, the pool "
                              f"has {len(source)}; give more categories or fewer anchors.")
    g = torch.Generator().manual_seed(ev.seed + (0 if kind == "token" else 7_777))
    picks = [source[torch.randperm(len(source), generator=g)[:need]] for _ in range(ev.n_draws)]
    anchors, held = [p[:n_anchors] for p in picks], [p[n_anchors:] for p in picks]
    found = discover_rows(packed, d, anchors, cfg, vocab_pos)
    res = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchors, held)
    return res["held_out_auc"]


def site_evidence(packed: torch.Tensor, d: int, found: list, anchor_rows: list[torch.Tensor],
                  held_rows: list[torch.Tensor], cfg: DiscoveryConfig, ev: EvidenceConfig,
                  held_out_auc: torch.Tensor, vocab_pos: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
    """References, intervals and p-values for the features of one site (one entry per category).

    Returns ``float64 [C]`` tensors: ``held_out_auc_lo`` / ``_hi`` (bootstrap over held-out
    members), ``null_token_auc`` / ``null_listed_auc`` (median of each null, the same for every
    category of the site), ``null_listed_q95``, ``p_token`` / ``p_listed``, and ``null_auc``
    (the stricter median, the reference a margin is measured from).
    """
    n, c = packed.shape[0], len(found)
    scores = prototype_scores(packed, d, [(f[0], f[1]) for f in found])
    anchors, held = membership(n, anchor_rows), membership(n, held_rows)
    u, valid = member_wins(scores, held, ~anchors & ~held)
    lo, hi = bootstrap_interval(u, valid, ev.n_boot, ev.level, ev.seed)
    n_anchors = int(torch.tensor([len(a) for a in anchor_rows]).median())
    n_held = int(torch.tensor([len(h) for h in held_rows]).median())
    pool = torch.cat([torch.as_tensor(r) for r in anchor_rows + held_rows])
    out = {"held_out_auc_lo": lo, "held_out_auc_hi": hi}
    auc = held_out_auc.to(torch.float64)
    for kind in NULLS:
        null = null_aucs(packed, d, kind, n_anchors, n_held, cfg, ev, pool, vocab_pos)
        out[f"null_{kind}_auc"] = null.median().expand(c).clone()
        out[f"p_{kind}"] = (1 + (null[None, :] >= auc[:, None]).sum(1)) / (1 + len(null))
        if kind == "listed":
            out["null_listed_q95"] = torch.quantile(null, 0.95).expand(c).clone()
    out["null_auc"] = torch.maximum(out["null_token_auc"], out["null_listed_auc"])
    return out


def evaluate_site(packed: torch.Tensor, d: int, anchor_rows: list[torch.Tensor],
                  held_rows: list[torch.Tensor], cfg: DiscoveryConfig,
                  ev: EvidenceConfig | None = None) -> list[tuple[tuple, dict, float]]:
    """Discover and evaluate one feature per category at one site.

    Returns, per category, ``((dims, signs, dim_auc, params), metrics, threshold)``: the
    held-out AUC against the vocabulary and against other categories' members, the anchors'
    AUC, the mean per-dim AUC on the anchors, and with ``ev`` the references, interval and
    p-values of :func:`site_evidence`.
    """
    vocab_pos = positive_rates(packed, d)
    found = discover_rows(packed, d, anchor_rows, cfg, vocab_pos)
    res = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchor_rows, held_rows)
    extra = site_evidence(packed, d, found, anchor_rows, held_rows, cfg, ev, res["held_out_auc"],
                          vocab_pos) if ev is not None else {}
    out = []
    for c, f in enumerate(found):
        metrics = {k: float(v[c]) for k, v in {**res, **extra}.items() if k != "threshold"}
        metrics["mean_dim_auc"] = float(f[2].mean()) if len(f[2]) else float("nan")
        out.append((f, metrics, float(res["threshold"][c])))
    return out
