"""Bridge to bag-of-dims: the latent ``h = W x`` is a hidden state, so the sign readers and the
sign mutual information of ``bagofdims`` run on it unchanged."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .data import rows_to_batch
from .model import BowsModel


def _bagofdims():
    try:
        from bagofdims.signs.bits import agreement, pack_signs
        from bagofdims.stats import mi_summary
    except ImportError as exc:
        raise ImportError("the bridge needs bagofdims.signs.bits (pack_signs, agreement) and "
                          "bagofdims.stats (mi_summary); install the full bagofdims package") from exc
    return pack_signs, agreement, mi_summary


@torch.no_grad()
def hamming_recall(model: BowsModel, X: sp.csr_matrix, k: int = 10, max_windows: int = 2000,
                   candidates: np.ndarray | None = None) -> dict:
    """Read each window's latent by sign agreement with every word's one-hot latent ``W[:, i]``.

    Returns top-k recall of the window's words (restricted to ``candidates`` when given) and the
    recall a random ranking would give.
    """
    pack_signs, agreement, _ = _bagofdims()
    cand = np.arange(X.shape[1]) if candidates is None else np.asarray(candidates)
    rows = np.arange(min(max_windows, X.shape[0]))
    h = model.encode(rows_to_batch(X, rows)).float()
    m = h.shape[1]
    protos = pack_signs(model.W[:, torch.from_numpy(cand)].T.float())
    scores = agreement(pack_signs(h), protos, m).float()          # [n, |cand|]
    top = torch.topk(scores, min(k, len(cand)), dim=1).indices.numpy()
    truth = X[rows][:, cand].toarray() > 0
    hits = np.take_along_axis(truth, top, axis=1).sum(1)
    denom = np.minimum(truth.sum(1), k)
    ok = denom > 0
    return {"recall_at_k": float((hits[ok] / denom[ok]).mean()), "k": k,
            "chance": float((truth.sum(1)[ok] / len(cand)).mean() * k / np.maximum(denom[ok], 1).mean()),
            "windows": int(ok.sum())}


@torch.no_grad()
def sign_structure(model: BowsModel, X: sp.csr_matrix, max_windows: int = 2000, seed: int = 0) -> dict:
    """Sign mutual information of the latent (bagofdims.stats.mi_summary) plus sign balance."""
    _, _, mi_summary = _bagofdims()
    rows = np.arange(min(max_windows, X.shape[0]))
    h = model.encode(rows_to_batch(X, rows)).float()
    out = {k: (float(v) if isinstance(v, (int, float, torch.Tensor, np.floating)) else v)
           for k, v in mi_summary(h, rotate_control=True, seed=seed).items()}
    out["positive_fraction"] = float((h > 0).float().mean())
    return out
