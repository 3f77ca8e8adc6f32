"""Antipodal pairs: features that never fire together stored in opposite directions (cos ≈ -1).

With tied weights and a ReLU, two mutually exclusive features can share one direction with
opposite signs: when one fires, the other's pre-activation ``-|w|² + b`` is negative and the ReLU
removes it, so the pair costs one dimension and no interference. Two checks:

- **planted**: synthetic data whose features 2k, 2k+1 never co-occur (``structure="pairs"`` of
  :mod:`superposition.synthetic`), fewer latent dims than features; the cosines of the planted
  pairs against every other pair of features. A pair is active half the time by default: when
  every feature is rare, any two seldom co-fire and antipodality stops being specific to partners
  (20 features, m 10, 1500 steps: at 5% activity 3 of 10 planted pairs and 4% of the other pairs
  fall below cos -0.9; at 50% all planted pairs sit at -1.00 and the others at 0);
- **words**: pairs of frequent words that never share a training window although independence
  predicts at least ``min_expected`` shared windows, against all other pairs of the same words
  with that expectation (the frequency-matched control).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .geometry import normalized_columns
from .synthetic import SyntheticConfig, train_sweep
from bagofdims.errors import InvalidArgument


def _summary(cos: np.ndarray) -> dict:
    if len(cos) == 0:
        return {"n": 0, "mean_cos": None, "median_cos": None, "frac_below_-0.5": None, "frac_below_-0.9": None}
    return {"n": int(len(cos)), "mean_cos": float(cos.mean()), "median_cos": float(np.median(cos)),
            "frac_below_-0.5": float((cos < -0.5).mean()), "frac_below_-0.9": float((cos < -0.9).mean())}


def pair_cosines(W, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(w_a, w_b) of the given pairs [p, 2] and of every other pair of the features involved
    (the control), as two arrays."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ids = np.unique(pairs)
    v = normalized_columns(W, ids)
    pos = {int(i): k for k, i in enumerate(ids)}
    cos = v @ v.T
    mark = np.zeros_like(cos, dtype=bool)
    a, b = [pos[int(x)] for x in pairs[:, 0]], [pos[int(x)] for x in pairs[:, 1]]
    mark[a, b] = mark[b, a] = True
    iu = np.triu_indices(len(ids), 1)
    return cos[a, b], cos[iu][~mark[iu]]


def planted_pairs(features: int = 20, latent: int = 10, p_active: float = 0.5,
                  weight_decay: str = "0.1", steps: int = 3000, lr: float = 1e-2, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Train ReLU models on mutually exclusive pairs; cosines of planted vs other pairs per decay.
    Returns (metrics, the weights [K, m, n] for the figure)."""
    cfg = SyntheticConfig(structure="pairs", features=features, latent=str(latent), weight_decay=weight_decay,
                          models="relu", steps=steps, lr=lr, p_max=p_active, seed=seed)
    specs, W, _ = train_sweep(cfg)
    pairs = np.arange(features).reshape(-1, 2)
    runs = []
    for k, s in enumerate(specs):
        inside, other = pair_cosines(W[k, : s["latent"]].numpy(), pairs)
        runs.append({"weight_decay": s["weight_decay"], "loss": s["loss"], "planted": _summary(inside),
                     "other_pairs": _summary(other)})
    return {"features": features, "latent": latent, "p_active": p_active, "steps": steps, "lr": lr,
            "runs": runs}, W.numpy()


def exclusive_word_pairs(X: sp.csr_matrix, ids, min_expected: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Among words ``ids``: pairs that share no window of X although independence predicts at
    least ``min_expected`` shared windows, and (the control) all other pairs with that expectation.
    Both as vocabulary-id arrays [p, 2]."""
    ids = np.asarray(ids, dtype=np.int64)
    if min_expected <= 0:
        raise InvalidArgument(f"min_expected must be > 0, got {min_expected}")
    x = X[:, ids].tocsc().astype(np.float64)
    joint = (x.T @ x).toarray()
    cnt = np.diag(joint)
    expected = np.outer(cnt, cnt) / X.shape[0]
    iu = np.triu_indices(len(ids), 1)
    ok = expected[iu] >= min_expected
    never = ok & (joint[iu] == 0)
    pairs = np.stack([ids[iu[0]], ids[iu[1]]], 1)
    return pairs[never], pairs[ok & ~never]


def word_pairs(W, X: sp.csr_matrix, ids, vocab: list[str], min_expected: float = 5.0, show: int = 8) -> dict:
    """Cosines of never-co-occurring frequent word pairs vs the frequency-matched other pairs."""
    never, other = exclusive_word_pairs(X, ids, min_expected)
    v_never = _pair_cos(W, never)
    v_other = _pair_cos(W, other)
    order = np.argsort(v_never)[:show]
    return {"words": int(len(ids)), "min_expected": min_expected, "never": _summary(v_never),
            "control": _summary(v_other),
            "most_antipodal": [[vocab[int(a)], vocab[int(b)], float(c)] for (a, b), c in
                               zip(never[order], v_never[order])],
            "cos_never": v_never, "cos_control": v_other}


def _pair_cos(W, pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros(0)
    ids = np.unique(pairs)
    v = normalized_columns(W, ids)
    pos = np.searchsorted(ids, pairs)
    return (v[pos[:, 0]] * v[pos[:, 1]]).sum(1)
