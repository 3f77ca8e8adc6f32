"""Value coding: an ordered quantity read linearly from the words' latents.

A word's latent alone is its column ``h = W e_i``. If the model stores a quantity (latitude,
longitude, a number's value) along a direction, a ridge regression from ``h`` predicts it for
words it never saw. Everything is nested: outer K folds give each word a prediction from a
model that did not see it; inside each outer training set an inner K-fold picks the ridge
strength (never the held-out words). R² pools the out-of-fold predictions. The null repeats the
whole procedure with the targets shuffled across words (same words, same folds); its mean sits
near or below 0 by construction, and the p-value is ``(1 + #null >= observed) / (1 + n_null)``.

Targets: coordinates of country names, capitals and demonyms from the ``countryinfo`` package
(a gazetteer shipped inside the wheel), and the numbers 0-100 (which the tokeniser keeps).
"""
from __future__ import annotations

import numpy as np

from bagofdims.errors import InvalidArgument, NothingFound

ALPHAS = np.logspace(-3, 4, 15)  # ridge strengths per standardised feature, times n_train


def gazetteer() -> dict[str, tuple[float, float]]:
    """Single-word place names -> (latitude, longitude): countries and demonyms at the country's
    coordinates, capitals at the capital's. A word given two places > 2 degrees apart is dropped."""
    try:
        from countryinfo import all_countries
    except ImportError as exc:
        raise ImportError("value coding of places needs the countryinfo package "
                          "(pip install 'countryinfo>=1.0'; scripts/setup.sh installs it)") from exc
    got: dict[str, list[tuple[float, float]]] = {}
    for c in all_countries():
        info = c.info()
        ll, cap, cll = info.get("latlng"), info.get("capital"), info.get("capital_latlng")
        pairs = []
        if ll and len(ll) == 2:
            pairs += [(info.get("name"), ll), (info.get("demonym"), ll)]
        if cap and cll and len(cll) == 2:
            pairs.append((cap, cll))
        for word, (lat, lon) in pairs:
            if isinstance(word, str) and word.isalpha():
                got.setdefault(word, []).append((float(lat), float(lon)))
    out = {}
    for word, places in got.items():
        p = np.asarray(places)
        if np.abs(p - p[0]).max() <= 2.0:
            out[word] = tuple(p.mean(0))
    return out


def number_words(vocab: list[str]) -> dict[str, float]:
    """The vocabulary's number words (0-100) -> their value."""
    return {w: float(w) for w in vocab if w.isdigit()}


def _folds(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    f = np.arange(n) % k
    rng.shuffle(f)
    return f


def _ridge_paths(Htr, Ytr, Hte, alphas) -> np.ndarray:
    """Predictions [len(alphas), n_te, t] of ridge fits on standardised features (one SVD)."""
    mu, sd = Htr.mean(0), Htr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    A, B = (Htr - mu) / sd, (Hte - mu) / sd
    ym = Ytr.mean(0)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    uy = U.T @ (Ytr - ym)                                   # [r, t]
    BV = B @ Vt.T                                           # [n_te, r]
    lam = alphas[:, None] * len(A)
    shrink = s[None, :] / (s[None, :] ** 2 + lam)           # [a, r]
    return np.einsum("nr,ar,rt->ant", BV, shrink, uy) + ym


def r2(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² per target column (1 - SSE / SS around the mean of y)."""
    ss = ((y - y.mean(0)) ** 2).sum(0)
    return 1 - ((y - pred) ** 2).sum(0) / np.where(ss > 0, ss, np.nan)


def nested_ridge(H: np.ndarray, Y: np.ndarray, folds: int = 5, inner: int = 4, seed: int = 0,
                 alphas: np.ndarray = ALPHAS) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions [n, t] and the ridge strength each outer fold chose (inner CV on
    its training words, by mean squared error summed over targets)."""
    n = len(H)
    if n < 2 * folds or folds < 2 or inner < 2:
        raise InvalidArgument(f"nested ridge needs folds, inner >= 2 and >= {2 * folds} words, got {n}")
    rng = np.random.default_rng(seed)
    outer = _folds(n, folds, rng)
    pred, chosen = np.zeros_like(Y), []
    for f in range(folds):
        tr, te = np.flatnonzero(outer != f), np.flatnonzero(outer == f)
        inn = _folds(len(tr), inner, rng)
        err = np.zeros(len(alphas))
        for g in range(inner):
            a, v = tr[inn != g], tr[inn == g]
            err += ((_ridge_paths(H[a], Y[a], H[v], alphas) - Y[v][None]) ** 2).sum((1, 2))
        best = int(np.argmin(err))
        chosen.append(float(alphas[best]))
        pred[te] = _ridge_paths(H[tr], Y[tr], H[te], alphas[best:best + 1])[0]
    return pred, chosen


def value_coding(H: np.ndarray, Y: np.ndarray, names: list[str], targets: list[str], folds: int = 5,
                 n_null: int = 100, seed: int = 0) -> dict:
    """Held-out R² of each target from H (rows = words) with its shuffled-target null."""
    H, Y = np.asarray(H, np.float64), np.asarray(Y, np.float64).reshape(len(H), -1)
    if len(names) != len(H) or Y.shape[1] != len(targets):
        raise InvalidArgument("value_coding: names must match the rows of H, targets the columns of Y")
    pred, chosen = nested_ridge(H, Y, folds, seed=seed)
    obs = r2(pred, Y)
    rng = np.random.default_rng(seed + 1)
    null = np.stack([r2(nested_ridge(H, Y[perm], folds, seed=seed)[0], Y[perm])
                     for perm in (rng.permutation(len(Y)) for _ in range(n_null))])   # [n_null, t]
    out = {"targets": list(targets), "n_words": len(H), "dims": H.shape[1], "folds": folds, "alphas_chosen": chosen,
           "alpha_rule": "inner 4-fold CV on each outer training fold (ridge per standardised feature x n_train)"}
    for k, t in enumerate(targets):
        out[t] = {"r2": float(obs[k]), "null_mean": float(null[:, k].mean()),
                  "null_q95": float(np.quantile(null[:, k], 0.95)), "n_null": n_null,
                  "p": float((1 + (null[:, k] >= obs[k]).sum()) / (1 + n_null))}
    out["predictions"] = {"words": list(names), "true": Y.tolist(), "pred": pred.tolist()}
    return out


def words_with_values(vocab_index: dict[str, int], table: dict[str, tuple | float],
                      min_words: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(words, vocabulary ids, values) of the table's words found in the vocabulary."""
    words = [w for w in table if w in vocab_index]
    if len(words) < min_words:
        raise NothingFound(f"only {len(words)} of the table's words are in the vocabulary; need "
                           f"{min_words} (use a larger --vocab)")
    vals = np.asarray([table[w] for w in words], np.float64).reshape(len(words), -1)
    return words, np.asarray([vocab_index[w] for w in words]), vals
