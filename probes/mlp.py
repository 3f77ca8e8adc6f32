"""One-hidden-layer ReLU probes, k independent MLPs trained as one batched problem.

Category j has its own W1[:, j, :] [d, h], b1[j], w2[j] [h], b2[j]; the hidden layer of all k
MLPs is one matmul Z @ W1.view(d, k*h). The loss is the sum of per-column (class-weighted)
log losses and AdamW is elementwise, so columns do not interact. Early stopping is per column on
a stratified validation split drawn separately for each column; each column keeps the parameters
of its best validation epoch.

Cost per epoch is about 6 * n * d * k * h flops: for a 49k x 576 vocabulary, 200 categories and
h = 32 that is ~1 TFLOP, i.e. minutes per epoch on one CPU core; use a GPU for the full problem.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bagofdims.errors import InvalidArgument

from ._base import ProbeBase
from ._data import (
    Standardizer,
    as_features,
    as_labels,
    as_mask,
    check_two_classes,
    class_weights,
)


def _stratified_val(
    Y: torch.Tensor, M: torch.Tensor, frac: float, gen: torch.Generator
) -> torch.Tensor:
    """Per-column validation mask: a random `frac` of each column's positives and of its negatives."""
    u = torch.rand(Y.shape, generator=gen).to(Y.device)
    val = torch.zeros_like(Y)
    for cls in (Y & M, ~Y & M):
        cnt = cls.sum(0)
        n_val = (cnt.double() * frac).round().long().clamp(min=1).minimum(cnt - 1)
        keys = (
            torch.where(cls, u, torch.full_like(u, 2.0)).sort(0).values
        )  # class members first
        thr = keys.gather(0, (n_val - 1).clamp(min=0)[None])[0]
        val |= cls & (u <= thr) & (n_val > 0)
    return val


class MLPProbe(ProbeBase):
    """Batched one-hidden-layer MLP probes with weight decay, Adam and per-column early stopping."""

    def __init__(
        self,
        hidden: int = 32,
        weight_decay: float = 1e-4,
        lr: float = 1e-3,
        max_epochs: int = 100,
        batch_size: int = 4096,
        patience: int = 5,
        val_fraction: float = 0.2,
        balanced: bool = True,
        standardize: bool = True,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if not 0 <= val_fraction < 1:
            raise InvalidArgument(f"val_fraction must be in [0, 1), got {val_fraction}")
        if hidden < 1 or batch_size < 1 or max_epochs < 1:
            raise InvalidArgument("hidden, batch_size and max_epochs must be positive")
        self.hidden, self.weight_decay, self.lr = hidden, weight_decay, lr
        self.max_epochs, self.batch_size, self.patience = (
            max_epochs,
            batch_size,
            patience,
        )
        self.val_fraction, self.balanced, self.standardize = (
            val_fraction,
            balanced,
            standardize,
        )
        self.seed, self.device, self.dtype = seed, device, dtype
        self._fitted = False

    def _forward(
        self, Z: torch.Tensor, params=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        W1, b1, w2, b2 = params if params is not None else self.params_
        d, k, h = W1.shape
        pre = (Z @ W1.reshape(d, k * h)).view(-1, k, h) + b1
        return (F.relu(pre) * w2).sum(-1) + b2, pre

    def fit(self, X, y, mask=None) -> MLPProbe:
        """Fit on X [n, d] and y [n] / Y [n, k]; optional bool mask [n] or [n, k] of usable rows."""
        X = as_features(X, device=self.device, dtype=self.dtype)
        Y, self._vector = as_labels(y, X.shape[0], X.device)
        M = as_mask(mask, tuple(Y.shape), X.device)
        M = torch.ones_like(Y) if M is None else M
        n_pos, _ = check_two_classes(Y, M)
        gen = torch.Generator().manual_seed(self.seed)
        if self.val_fraction > 0:
            if (n_pos < 2).any():
                bad = (n_pos < 2).nonzero().flatten()[:10].tolist()
                raise InvalidArgument(
                    f"column(s) {bad} have < 2 positives: early stopping needs one to validate "
                    "on; add positives or pass val_fraction=0"
                )
            val = _stratified_val(Y, M, self.val_fraction, gen)
        else:
            val = torch.zeros_like(Y)
        train = M & ~val
        C = class_weights(Y, train, self.balanced, self.dtype)
        CS = torch.where(Y, C, -C)
        CSv = (
            torch.where(Y, 1.0, -1.0).to(self.dtype)
            * class_weights(Y, val, self.balanced, self.dtype)
            if self.val_fraction > 0
            else None
        )
        self._std = Standardizer.fit(X, self.standardize)
        Z = self._std.transform(X)
        n, d = Z.shape
        k, h = Y.shape[1], self.hidden
        dev, dt = Z.device, self.dtype
        bound1, bound2 = (
            1 / math.sqrt(d),
            1 / math.sqrt(h),
        )  # torch.nn.Linear's default init
        params = [
            ((torch.rand(d, k, h, generator=gen) * 2 - 1) * bound1).to(dev, dt),
            ((torch.rand(k, h, generator=gen) * 2 - 1) * bound1).to(dev, dt),
            ((torch.rand(k, h, generator=gen) * 2 - 1) * bound2).to(dev, dt),
            torch.zeros(k, device=dev, dtype=dt),
        ]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(
            [
                {"params": [params[0], params[2]], "weight_decay": self.weight_decay},
                {"params": [params[1], params[3]], "weight_decay": 0.0},
            ],
            lr=self.lr,
        )
        best = [p.detach().clone() for p in params]
        best_loss = torch.full((k,), float("inf"), dtype=torch.float64, device=dev)
        since = torch.zeros(k, dtype=torch.long, device=dev)
        self.best_epoch_ = torch.zeros(k, dtype=torch.long, device=dev)
        B = min(self.batch_size, n)
        for epoch in range(self.max_epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for start in range(0, n, B):
                idx = order[start : start + B]
                cs = CS[idx]
                logit, _ = self._forward(Z[idx], params)
                # n / |batch| makes the minibatch sum an unbiased estimate of the full weighted loss.
                loss = (cs.abs() * F.softplus(-torch.sign(cs) * logit)).sum() * (
                    n / idx.numel()
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if CSv is None:
                continue
            vloss = self._val_loss(Z, CSv, params)
            better = vloss < best_loss - 1e-9
            if better.any():
                with torch.no_grad():
                    best[0][:, better] = params[0][:, better]
                    for b, p in zip(best[1:], params[1:]):
                        b[better] = p[better]
                best_loss = torch.where(better, vloss, best_loss)
                self.best_epoch_[better] = epoch
            since = torch.where(better, torch.zeros_like(since), since + 1)
            if bool((since > self.patience).all()):
                break
        self.params_ = best if CSv is not None else [p.detach() for p in params]
        self.epochs_ = epoch + 1
        self.val_loss_ = best_loss
        self._fitted = True
        return self

    @torch.no_grad()
    def _val_loss(
        self, Z: torch.Tensor, CSv: torch.Tensor, params, chunk: int = 8192
    ) -> torch.Tensor:
        rows = (CSv != 0).any(1).nonzero().flatten()
        total = torch.zeros(CSv.shape[1], dtype=torch.float64, device=Z.device)
        for s in range(0, rows.numel(), chunk):
            r = rows[s : s + chunk]
            logit, _ = self._forward(Z[r], params)
            cs = CSv[r]
            total += (cs.abs() * F.softplus(-torch.sign(cs) * logit)).sum(
                0, dtype=torch.float64
            )
        return total

    @torch.no_grad()
    def _logits(self, X, chunk: int = 8192) -> torch.Tensor:
        X = as_features(X, device=self.params_[0].device, dtype=self.dtype)
        Z = self._std.transform(X)
        return torch.cat(
            [self._forward(Z[s : s + chunk])[0] for s in range(0, Z.shape[0], chunk)], 0
        )

    @torch.no_grad()
    def input_gradients(self, X, chunk: int = 8192) -> torch.Tensor:
        """Mean over rows of d logit / d x, in input units: [d, k] (or [d]).

        The logit is piecewise linear, so the mean gradient is W1_j @ (w2_j * P(unit active)):
        only the activation frequencies need a pass over X.
        """
        self._check()
        X = as_features(X, device=self.params_[0].device, dtype=self.dtype)
        Z = self._std.transform(X)
        W1, _, w2, _ = self.params_
        active = torch.zeros_like(w2)
        for s in range(0, Z.shape[0], chunk):
            active += (self._forward(Z[s : s + chunk])[1] > 0).sum(0)
        active /= Z.shape[0]
        g = torch.einsum("dkh,kh->dk", W1, w2 * active) / self._std.scale[:, None]
        return self._out(g)
