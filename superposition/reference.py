"""The reference training loop's form, written from the paper's description (for the speed bench
and the agreement check, not for training).

Dense multi-hot inputs and targets built per batch, a tied ``nn.Module`` computing
``ReLU(x W^T W + b)`` in fp32 with autograd, ``F.mse_loss``, ``torch.optim.AdamW`` (its default
implementation) over all parameters, and ``CosineAnnealingLR`` stepped once per batch. Started
from the same weights and fed the same windows, it follows the trainer's loss to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import Batch
from .model import BowsModel
from .train import _cosine


class ReferenceModel(nn.Module):
    """``W`` [m, V] and ``b`` [V]; ``forward(x) = ReLU((x W^T) W + b)`` on dense x."""

    def __init__(self, like: BowsModel):
        super().__init__()
        self.W = nn.Parameter(like.E.detach().T.clone().contiguous())
        self.b = nn.Parameter(like.b.detach().clone())
        self.relu = like.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x @ self.W.T) @ self.W + self.b
        return F.relu(pre) if self.relu else pre


class ReferenceLoop:
    """One optimiser step per call on a batch of windows: dense x, forward, MSE, AdamW, cosine."""

    def __init__(self, like: BowsModel, lr: float, weight_decay: float, total_steps: int):
        self.model = ReferenceModel(like)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total_steps)

    def step(self, batch: Batch) -> float:
        x = batch.dense(self.model.W.shape[1])
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.model(x), x)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())


class TrainerLoop:
    """The trainer's own step (fused loss, fused AdamW, its per-step cosine), for side-by-side runs
    with :class:`ReferenceLoop` (``superposition.train`` runs the same three calls per batch)."""

    def __init__(self, like: BowsModel, lr: float, weight_decay: float, total_steps: int,
                 compute_dtype: torch.dtype = torch.float32):
        self.model = BowsModel(like.E.shape[0], like.E.shape[1], relu=like.relu).to(like.E.device)
        self.model.load_state_dict(like.state_dict())
        dev = like.E.device.type
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay,
                                     fused=dev in ("cpu", "cuda"))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _cosine(s, total_steps))
        self.dtype = compute_dtype

    def step(self, batch: Batch) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.model.loss(batch, self.dtype)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())
