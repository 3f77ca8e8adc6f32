"""Shared prediction/evaluation surface of the probes (everything derives from decision_function)."""

from __future__ import annotations

import torch

from ._auc import rank_auc
from ._data import as_labels, as_mask
from bagofdims.errors import InvalidArgument


class ProbeBase:
    """Subclasses set `_fitted`, `_vector` (fitted on 1-D y) and implement `_logits(X) -> [n, k]`."""

    _fitted = False
    _vector = False

    def _check(self):
        if not self._fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted; call .fit(X, y) first"
            )

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., 0] if self._vector else t

    def _logits(self, X) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision_function(self, X) -> torch.Tensor:
        """Logits [n, k] (or [n] when fitted on 1-D labels)."""
        self._check()
        return self._out(self._logits(X))

    def predict_proba(self, X) -> torch.Tensor:
        """P(positive) per row and category, [n, k] (or [n])."""
        return torch.sigmoid(self.decision_function(X))

    def auc(self, X, y, mask=None) -> torch.Tensor:
        """Exact rank AUC per category, float64 [k] (scalar for 1-D y); mask selects rows per column."""
        self._check()
        scores = self._logits(X)
        Y, _ = as_labels(y, scores.shape[0], scores.device)
        if Y.shape[1] != scores.shape[1]:
            raise InvalidArgument(
                f"y has {Y.shape[1]} columns but the probe has {scores.shape[1]} categories"
            )
        out = rank_auc(scores, Y, as_mask(mask, tuple(Y.shape), scores.device))
        return out[0] if self._vector else out
