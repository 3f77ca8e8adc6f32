"""Evaluate sign-prototype features of categories on a vocabulary's packed signs, all at once.

For each category: prototype score of every vocabulary token (fraction of feature dims that
agree), then the AUC of the **held-out** members against (a) the whole vocabulary minus the
anchors and (b) hard negatives: the members of the other categories. Nothing here ever looks at
held-out members to choose dims.
"""

from __future__ import annotations

import torch
from bagofdims.features.discovery import discover_rows

from bagofdims.signs import bits

from bagofdims import stats


def membership(n_rows: int, sets: list[torch.Tensor]) -> torch.Tensor:
    """Bool ``[n_rows, C]``: row r is in set c."""
    out = torch.zeros(n_rows, len(sets), dtype=torch.bool)
    if sets:
        flat = torch.cat([torch.as_tensor(s, dtype=torch.int64) for s in sets])
        cols = torch.repeat_interleave(torch.arange(len(sets)), torch.tensor([len(s) for s in sets]))
        out[flat, cols] = True
    return out


def prototype_scores(packed: torch.Tensor, d: int, dims_signs: list[tuple]) -> torch.Tensor:
    """``[n_rows, C]`` agreement fraction of every row with every prototype; a prototype
    without dims (a threshold rule that kept none) scores 0.5 everywhere, i.e. AUC 0.5."""
    w = bits.feature_matrix(dims_signs, d)
    return torch.nan_to_num(bits.feature_scores(packed, w), nan=0.5)


def evaluate_prototypes(packed: torch.Tensor, d: int, dims_signs: list[tuple],
                        anchor_rows: list[torch.Tensor], held_rows: list[torch.Tensor],
                        fire_quantile: float = 0.99) -> dict[str, torch.Tensor]:
    """Held-out AUC vs the vocabulary and vs other categories, plus a firing threshold.

    Returns ``float [C]`` tensors: ``held_out_auc``, ``hard_auc``, ``anchor_auc`` (the anchors
    vs the vocabulary: a training-set number, for reference) and ``threshold`` (the
    ``fire_quantile`` of the scores of non-member tokens: above it a token counts as firing).
    """
    n = packed.shape[0]
    scores = prototype_scores(packed, d, dims_signs)
    anchors = membership(n, anchor_rows)
    held = membership(n, held_rows)
    members = anchors | held
    any_member = members.any(1, keepdim=True)
    out = {
        "held_out_auc": stats.auc(scores, held, ~anchors),
        "hard_auc": stats.auc(scores, held, held | (any_member & ~members)),
        "anchor_auc": stats.auc(scores, anchors, ~held),
    }
    non_member = torch.where(members, torch.full_like(scores, float("nan")), scores)
    step = max(1, (1 << 24) // max(n, 1))  # torch.quantile takes at most 2**24 elements a call
    out["threshold"] = torch.cat([
        torch.nanquantile(non_member[:, c:c + step], fire_quantile, dim=0)
        for c in range(0, scores.shape[1], step)]) if n <= 1 << 24 else \
        torch.full((scores.shape[1],), float("nan"))
    return out


def random_anchor_null(packed: torch.Tensor, d: int, n_sets: int, n_anchors: int, n_held: int,
                       cfg, seed: int = 0) -> torch.Tensor:
    """Held-out AUC of prototypes built from random token sets (what chance gives): ``[n_sets]``."""
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(packed.shape[0], generator=g)[: n_anchors + n_held] for _ in range(n_sets)]
    anchors = [p[:n_anchors] for p in perms]
    held = [p[n_anchors:] for p in perms]
    found = discover_rows(packed, d, anchors, cfg)
    res = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchors, held)
    return res["held_out_auc"]
