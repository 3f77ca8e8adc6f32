"""Constructive interference: words that the model outputs only because of the words around them.

For word i with feature ``w_i`` (column i of W) and bias ``b_i``, the pre-activation in a window x is

    pre_i(x) = b_i + |w_i|² x_i + sum_{j != i} (w_i . w_j) x_j        (bias + self + interference)

Alone (one-hot x = e_i) it is ``|w_i|² + b_i``. A word is *switched on by context* when that is
<= 0 (by itself the ReLU keeps it off) and yet pre_i > 0 in most windows that contain it: the
co-occurring words' overlaps ``w_i . w_j`` add up to lift it. The paper's example is "Beatles",
on in ~81% of its contexts and off alone. The interference term splits exactly over the words of
the window, so the mean contribution of partner j over i's contexts is ``(w_i . w_j) P(j | i)``.

Rates are measured on held-out windows; every function takes W [m, V], b [V] and a binary CSR
matrix of windows, so each can be checked on planted weights.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .geometry import _np
from bagofdims.errors import InvalidArgument


def alone_preactivation(W, b) -> np.ndarray:
    """``|w_i|² + b_i`` for every word [V]: its pre-activation when it is the only word."""
    w = _np(W)
    return (w ** 2).sum(0) + _np(b)


def context_rates(W, b, X: sp.csr_matrix, ids) -> dict[str, np.ndarray]:
    """For words ``ids``: how often pre_i > 0 in windows that contain i (``on_present``) and in
    windows that do not (``on_absent``), and the number of windows containing i (``contexts``).

    One sparse product ``X @ (W^T W[:, ids])`` gives every pre-activation at once.
    """
    ids = np.asarray(ids, dtype=np.int64)
    w, bb = _np(W), _np(b)
    pre = np.asarray(X @ (w.T @ w[:, ids])) + bb[ids]          # [n, k]
    present = X[:, ids].toarray() > 0
    on = pre > 0
    n_pres = present.sum(0)
    n_abs = X.shape[0] - n_pres
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"on_present": np.where(n_pres > 0, (on & present).sum(0) / np.maximum(n_pres, 1), np.nan),
                "on_absent": np.where(n_abs > 0, (on & ~present).sum(0) / np.maximum(n_abs, 1), np.nan),
                "contexts": n_pres}


def switched_on(W, b, X: sp.csr_matrix, ids, vocab: list[str], min_contexts: int = 5,
                majority: float = 0.5) -> dict:
    """Which of the words ``ids`` are switched on by context in the windows X.

    A word counts when its one-hot pre-activation is <= 0, it occurs in at least ``min_contexts``
    windows, and pre_i > 0 in more than ``majority`` of them. Returns counts and, per such word,
    its alone pre-activation, contexts and on-rates (present / absent), most contexts first.
    """
    if not 0 <= majority < 1 or min_contexts < 1:
        raise InvalidArgument(f"need 0 <= majority < 1 and min_contexts >= 1, got {majority}, {min_contexts}")
    ids = np.asarray(ids, dtype=np.int64)
    alone = alone_preactivation(W, b)[ids]
    r = context_rates(W, b, X, ids)
    seen = r["contexts"] >= min_contexts
    off = seen & (alone <= 0)
    hit = off & (r["on_present"] > majority)
    order = np.argsort(-r["contexts"][hit], kind="stable")
    words = {vocab[int(i)]: {"alone_preactivation": float(a), "contexts": int(c), "on_present": float(p),
                             "on_absent": float(q)}
             for i, a, c, p, q in zip(ids[hit][order], alone[hit][order], r["contexts"][hit][order],
                                      r["on_present"][hit][order], r["on_absent"][hit][order])}
    return {"words": len(ids), "with_min_contexts": int(seen.sum()), "min_contexts": min_contexts,
            "majority": majority, "alone_nonpositive": int(off.sum()), "switched_on": int(hit.sum()),
            "mean_on_present_of_alone_nonpositive": float(np.mean(r["on_present"][off])) if off.any() else None,
            "mean_on_absent_of_alone_nonpositive": float(np.mean(r["on_absent"][off])) if off.any() else None,
            "switched_on_words": words}


def partner_contributions(W, b, X: sp.csr_matrix, i: int, vocab: list[str], top: int = 10) -> dict:
    """Split word i's pre-activation over its contexts (windows of X containing i).

    Returns bias, mean self term, mean interference, the partners with the largest mean
    contribution ``(w_i . w_j) P(j | i)`` (with their overlap and co-occurrence rate), the
    pre-activations in and out of context (for the figure), and what the top partners do without
    i: the pre-activation ``b_i + sum_j w_i . w_j`` over the top partners, all present, i absent.
    """
    w, bb = _np(W), _np(b)
    g = w.T @ w[:, i]                                   # [V] overlaps w_j . w_i
    xi = np.asarray(X[:, i].todense()).ravel() > 0
    if not xi.any():
        raise InvalidArgument(f"word {vocab[i]!r} occurs in none of the {X.shape[0]} windows given")
    pre = np.asarray(X @ g).ravel() + bb[i]
    Xi = X[np.flatnonzero(xi)]
    p_given = np.asarray(Xi.mean(0)).ravel()            # P(j | i)
    contrib = g * p_given
    contrib[i] = 0.0
    best = np.argsort(-contrib)[:top]
    best = best[contrib[best] > 0]
    return {"word": vocab[i], "alone_preactivation": float(g[i] + bb[i]), "bias": float(bb[i]),
            "self": float(g[i]), "contexts": int(xi.sum()),
            "mean_interference_present": float((pre[xi] - bb[i] - g[i]).mean()),
            "on_present": float((pre[xi] > 0).mean()),
            "on_absent": float((pre[~xi] > 0).mean()) if (~xi).any() else None,
            "partners": [{"word": vocab[int(j)], "overlap": float(g[j]), "p_given_word": float(p_given[j]),
                          "mean_contribution": float(contrib[j])} for j in best],
            "top_partners_without_word": float(bb[i] + g[best].sum()),
            "pre_present": pre[xi], "pre_absent": pre[~xi]}


def pick_targets(result: dict, count: int = 3) -> list[str]:
    """The switched-on words to show: the ``count`` with the most contexts (a rule fixed before
    looking at the figures, not the most striking ones)."""
    return list(result["switched_on_words"])[:count]
