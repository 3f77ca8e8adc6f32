"""Tied bag-of-words autoencoder ``x_hat = ReLU(W^T W x + b)`` (or its linear variant).

The weight is stored as the embedding table ``E = W^T`` [V, m] so that the encode of a binary
sparse input is a sum of active rows (``embedding_bag``) and the decode a dense matmul. The loss
and its gradients are computed together in one fused pass (:class:`_FusedLoss`): no autograd
graph, no scatter/gather backward of the sparse encode, bf16 matmuls where the hardware has them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import Batch
from bagofdims.errors import InvalidArgument


class BowsModel(nn.Module):
    """Tied autoencoder with ``W`` of shape [latent, vocab]; ``W`` uniform in ±sqrt(2/V), b = 0."""

    def __init__(self, vocab_size: int, latent: int, relu: bool = True, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        bound = math.sqrt(2.0 / vocab_size)
        self.E = nn.Parameter((torch.rand(vocab_size, latent, generator=g) * 2 - 1) * bound)
        self.b = nn.Parameter(torch.zeros(vocab_size))
        self.relu = relu

    @property
    def W(self) -> torch.Tensor:
        """Weights as [latent, vocab] (columns are the word features)."""
        return self.E.T

    def encode(self, batch: Batch) -> torch.Tensor:
        """Latent ``h = W x`` [n, m] for a sparse batch."""
        return F.embedding_bag(batch.ids, self.E, batch.offsets, mode="sum")

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.E

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        pre = F.linear(h, self.E, self.b)
        return F.relu(pre) if self.relu else pre

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def loss(self, batch: Batch, compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Mean squared error over all [n, V] entries, fused forward + gradient."""
        return _FusedLoss.apply(self.E, self.b, batch.ids, batch.offsets, batch.rows, batch.n,
                                self.relu, compute_dtype)


class _FusedLoss(torch.autograd.Function):
    """Loss and gradients in one pass; backward only scales the stored gradients.

    Everything works on the transposed layout ``[V, n]`` (vocabulary rows, batch columns), so
    the dense input ``X^T`` is built directly by one scatter and every matmul reads contiguous
    operands. With ``g = dL/dpre^T`` (times N/2) ``= [pre > 0] (pre - x)``:
    ``dE = g h + X^T (g^T E)`` (decode + encode terms, one ``addmm``), ``db = sum_cols g``.
    The matmuls run in ``compute_dtype`` (bf16 on AMX CPUs / CUDA); the loss sum, the gradient
    handed to the optimiser and the master weights stay in fp32.
    """

    @staticmethod
    def forward(ctx, E, b, ids, offsets, rows, n, relu, compute_dtype):
        V = E.shape[0]
        N = n * V
        Ec = E.detach().to(compute_dtype)
        h = F.embedding_bag(ids, Ec, offsets, mode="sum")              # [n, m]
        pre = torch.addmm(b.detach().to(compute_dtype)[:, None], Ec, h.T)  # [V, n]
        g = F.relu(pre) if relu else pre
        hit = g[ids, rows]                  # outputs at the targets that are 1
        on = hit > 0 if relu else torch.ones_like(hit, dtype=torch.bool)
        gf = g.float()
        # sum (g - x)^2 over all entries without materialising x; an off unit (pre <= 0) whose
        # target is 1 adds 1 to the error and nothing to the gradient
        loss = (torch.dot(gf.view(-1), gf.view(-1)) - 2 * hit.float().sum() + len(ids)) / N
        gb_raw = gf.sum(1) - torch.bincount(ids[on], minlength=V)
        g.index_put_((ids, rows), hit - on.to(hit.dtype))  # g = [pre > 0] (pre - x), in place
        xt = torch.zeros_like(pre)
        xt[ids, rows] = 1
        scale = 2.0 / N  # folded into the small [n, m] operands, not the big [V, *] ones
        gh = (g.T @ Ec).mul_(scale)                                     # [n, m]
        gE = torch.addmm(xt @ gh, g, h * scale).float()                 # [V, m]
        gb = gb_raw.mul_(scale)
        ctx.save_for_backward(gE, gb)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        gE, gb = ctx.saved_tensors
        if grad_out.device.type == "cpu" and float(grad_out) == 1.0:
            return gE, gb, None, None, None, None, None, None  # the usual case: skip 10M multiplies
        return gE * grad_out, gb * grad_out, None, None, None, None, None, None


def dense_loss(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """Straightforward reference: dense input, fp32, autograd (W is [m, V])."""
    pre = (x @ W.T) @ W + b
    x_hat = F.relu(pre) if relu else pre
    return ((x_hat - x) ** 2).mean()


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA and on CPUs with native bf16 matmul (AMX / AVX512-BF16), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise InvalidArgument(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:  # Linux only; elsewhere stay in fp32
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags
