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


class _WordTokenizer:
    """A word-level stand-in for a tokenizer: ``" word"`` is one token when the word is in the
    toy vocabulary, so :func:`bagofdims.categories.map_categories` splits categories exactly as
    it does for a language model's vocabulary (by word, seeded, anchors then held out)."""

    def __init__(self, vocab: list[str]):
        self.vocab, self.index = vocab, {w: i for i, w in enumerate(vocab)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        word = text[1:] if text.startswith(" ") else None
        return [self.index[word]] if word in self.index else []

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " " + self.vocab[ids[0]]


def _median(x) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    return float(np.median(x)) if len(x) else None


@torch.no_grad()
def category_reading(W: torch.Tensor, vocab: list[str], categories="default", n_anchors: int = 10,
                     min_held_out: int = 5, k: int = 32, n_null: int = 20, seed: int = 0,
                     discoverable: float = 0.9) -> dict:
    """bagofdims' category features on the toy latents: word i's hidden state is its column
    ``h = W e_i`` [m]; the signs of all V columns form the "vocabulary cache".

    Per category of ``categories`` (a shipped bagofdims set, a path or a dict) with at least
    ``n_anchors + min_held_out`` words in the vocabulary: top-``k`` dims by per-dim sign AUC on
    the anchors (discover_rows), then the prototype's held-out AUC against the whole vocabulary
    and against the other categories' members (evaluate_prototypes). References: prototypes from
    random word sets (``n_null``), and the same categories on the model's random initial weights.
    """
    from bagofdims.categories import load_categories, map_categories
    from bagofdims.features.discovery import DiscoveryConfig, discover_rows
    from bagofdims.features.evaluation import evaluate_prototypes, random_anchor_null
    from bagofdims.signs.bits import pack_signs

    cats = load_categories(categories)
    mapped, skipped = map_categories(cats, _WordTokenizer(vocab), n_anchors, min_held_out, seed)
    m = W.shape[0]
    cfg = DiscoveryConfig(k=min(k, m), seed=seed)
    out = {"categories_total": len(cats), "usable": len(mapped), "n_anchors": n_anchors,
           "min_held_out": min_held_out, "k": cfg.k, "dims": m, "discoverable_threshold": discoverable}
    if not mapped:
        return {**out, "note": "no category has enough words in this vocabulary"}
    anchors = [torch.tensor(c.anchors) for c in mapped]
    held = [torch.tensor(c.held_out) for c in mapped]

    def read(weights: torch.Tensor) -> dict:
        packed = pack_signs(weights.T.float().contiguous())
        found = discover_rows(packed, m, anchors, cfg)
        ev = evaluate_prototypes(packed, m, [(f[0], f[1]) for f in found], anchors, held)
        h = ev["held_out_auc"].numpy()
        return {"held_out_auc_median": _median(h), "hard_auc_median": _median(ev["hard_auc"].numpy()),
                "discoverable": int((h >= discoverable).sum()),
                "per_category": {c.name: round(float(a), 4) for c, a in zip(mapped, h)},
                "null_held_out_auc_median": _median(random_anchor_null(
                    packed, m, n_null, n_anchors, int(np.median([len(x) for x in held])), cfg, seed).numpy())}

    init = BowsModel(len(vocab), m, seed=seed).W.detach()
    return {**out, "trained": read(W.detach()), "random_init": read(init),
            "held_out_sizes": {c.name: len(c.held_out) for c in mapped}}


def lm_reference(report_json: str) -> dict | None:
    """The language model's category numbers from its reading report (``reports/<model>/reading.json``):
    the site picked from anchors alone (highest mean per-dim AUC, the catalog's rule), the best
    site by held-out median (for reference), the embedding-sign baseline and the random-anchor
    null. None when the report is absent."""
    import json
    from pathlib import Path

    path = Path(report_json)
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    e3 = rep["e3"]
    picked = max(e3, key=lambda s: e3[s]["mean_dim_auc"])
    best = max(e3, key=lambda s: e3[s]["held_out_auc"]["median"])
    return {"report": str(path), "model": rep.get("model"), "width": rep.get("width"),
            "vocab": rep.get("vocab"),
            "k": (rep.get("categories") or {}).get("config", {}).get("k"),
            "picked_site": picked, "picked_held_out_auc_median": e3[picked]["held_out_auc"]["median"],
            "picked_hard_auc_median": e3[picked]["hard_auc"]["median"],
            "picked_null_median": e3[picked]["null_held_out_auc"]["median"],
            "picked_discoverable": e3[picked]["discoverable"], "n_categories": e3[picked]["n_categories"],
            "best_site": best, "best_held_out_auc_median": e3[best]["held_out_auc"]["median"],
            "embedding_held_out_auc_median": rep["e3_embedding"]["held_out_auc"]["median"],
            "per_category": e3[picked]["per_category"]}
