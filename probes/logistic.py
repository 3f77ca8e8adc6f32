"""L2-regularised logistic probes, many one-vs-rest categories trained as one batched problem.

Objective of column j (features standardised internally, z = (x - mean) / scale):

    L_j(w, b) = sum_i c_ij * log(1 + exp(-s_ij (z_i . w + b))) + (l2 / 2) * ||w||^2

with s = +1/-1 for positive/negative rows, c_ij the class weights (each class carries half the
loss when balanced=True; 1/n otherwise), the bias unpenalised. Columns share nothing, so the sum
over columns is minimised by a column-batched L-BFGS with one matmul per evaluation.

Mapping to scikit-learn: this is exactly LogisticRegression(C = 1 / (l2 * n_train),
class_weight="balanced" if balanced else None) fitted on StandardScaler-transformed X, because
sklearn minimises C * sum_i w_i * logloss_i + ||w||^2 / 2 with balanced weights w_i = n / (2 n_class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import ProbeBase
from ._data import Standardizer, as_features, as_labels, as_mask, class_weights
from ._lbfgs import batched_lbfgs
from bagofdims.errors import InvalidArgument


def sklearn_C(l2: float, n_train: int) -> float:
    """The sklearn `C` giving the same optimum as `l2` on `n_train` rows (see module docstring)."""
    return float("inf") if l2 == 0 else 1.0 / (l2 * n_train)


class LogisticProbe(ProbeBase):
    """Logistic-regression probe(s) on hidden states or ±1 signs.

    `fit(X [n, d], y [n] or Y [n, k])` trains k independent one-vs-rest probes at once.
    Results: `weights` [d, k] and `bias` [k] in input units (so `X @ weights + bias` are the
    logits), `weights_std` / `bias_std` in standardised units, `mean_` / `scale_`. With 1-D y the
    category axis is dropped everywhere.
    """

    def __init__(
        self,
        l2: float = 1e-3,
        balanced: bool = True,
        standardize: bool = True,
        max_iter: int = 500,
        tol: float = 1e-5,
        history: int = 10,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if l2 < 0:
            raise InvalidArgument(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        self.balanced = balanced
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.history = history
        self.device = device
        self.dtype = dtype
        self._fitted = False

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, mask=None) -> LogisticProbe:
        """Fit on X [n, d] and labels y [n] / Y [n, k] (0/1 or bool).

        mask: optional bool [n] or [n, k]; rows where it is False are ignored for that column
        (lets cross-validation train every category on its own rows in one batched problem).
        """
        X = as_features(X, device=self.device, dtype=self.dtype)
        Y, self._vector = as_labels(y, X.shape[0], X.device)
        M = as_mask(mask, tuple(Y.shape), X.device)
        C = class_weights(
            Y, M, self.balanced, self.dtype
        )  # raises on single-class columns
        self._std = Standardizer.fit(X, self.standardize)
        Z = self._std.transform(X)
        n, d = Z.shape
        k = Y.shape[1]
        CS = torch.where(Y, C, -C)  # signed weights: c * s
        l2 = self.l2
        full = torch.arange(k, device=Z.device)

        def objective(theta: torch.Tensor, cols: torch.Tensor):
            cs = CS if cols.numel() == k and torch.equal(cols, full) else CS[:, cols]
            W, b = theta[:d], theta[d]
            margin = -torch.sign(cs) * (Z @ W + b)  # -s * logit
            loss = (cs.abs() * F.softplus(margin)).sum(0, dtype=torch.float64)
            loss = loss + 0.5 * l2 * (W.double() ** 2).sum(0)
            G = -cs * torch.sigmoid(margin)  # d loss / d logit
            grad = torch.cat([Z.T @ G + l2 * W, G.sum(0, keepdim=True)], 0)
            return loss, grad

        res = batched_lbfgs(
            objective,
            torch.zeros(d + 1, k, device=Z.device, dtype=self.dtype),
            max_iter=self.max_iter,
            tol=self.tol,
            history=self.history,
        )
        self.weights_std_ = res.theta[:d]
        self.bias_std_ = res.theta[d]
        self.loss_ = res.loss
        self.grad_max_ = res.grad_max
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        self.n_train_ = (
            M.sum(0) if M is not None else torch.full((k,), n, device=Z.device)
        )
        self._fitted = True
        return self

    # ---------------------------------------------------------------- results
    @property
    def mean_(self) -> torch.Tensor:
        self._check()
        return self._std.mean

    @property
    def scale_(self) -> torch.Tensor:
        self._check()
        return self._std.scale

    @property
    def weights(self) -> torch.Tensor:
        """[d, k] weights in input units: logits = X @ weights + bias."""
        self._check()
        return self._out(self.weights_std_ / self._std.scale[:, None])

    @property
    def bias(self) -> torch.Tensor:
        """[k] bias in input units."""
        self._check()
        w_in = self.weights_std_ / self._std.scale[:, None]
        return self._out(self.bias_std_ - self._std.mean @ w_in)

    @property
    def weights_std(self) -> torch.Tensor:
        """[d, k] weights on standardised features (comparable across dims of different scale)."""
        self._check()
        return self._out(self.weights_std_)

    @property
    def bias_std(self) -> torch.Tensor:
        self._check()
        return self._out(self.bias_std_)

    def _logits(self, X) -> torch.Tensor:
        X = as_features(X, device=self.weights_std_.device, dtype=self.dtype)
        return self._std.transform(X) @ self.weights_std_ + self.bias_std_

    def sklearn_C(self, n_train: int | None = None) -> float:
        """The sklearn `C` equivalent to this probe's l2 on the rows it was fitted on."""
        if n_train is None:
            self._check()
            n_train = int(self.n_train_.max())
        return sklearn_C(self.l2, n_train)
