"""Tied bag-of-words autoencoder ``x_hat = ReLU(W^T W x + b)`` (or its linear variant).

The weight is stored as the embedding table ``E = W^T`` [V, m] so that the encode of a binary
sparse input is a sum of active rows (``embedding_bag``) and the decode a dense matmul. The loss
and its gradients are computed together in one fused pass (:class:`_FusedLoss`), which avoids
materialising the dense input and autograd's scatter/gather of the sparse terms.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .data import Batch


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


def _transpose_csr(ids: torch.Tensor, rows: torch.Tensor, n: int, vocab: int, dtype) -> torch.Tensor:
    """X^T as a CSR [V, n] matrix of ones (for the encode's weight gradient)."""
    order = torch.argsort(ids, stable=True)
    crow = torch.zeros(vocab + 1, dtype=torch.int64, device=ids.device)
    crow[1:] = torch.cumsum(torch.bincount(ids, minlength=vocab), 0)
    vals = torch.ones(len(ids), dtype=dtype, device=ids.device)
    with warnings.catch_warnings():  # "CSR support is in beta"
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, rows[order], vals, (vocab, n), check_invariants=False)


class _FusedLoss(torch.autograd.Function):
    """Loss and gradients in one pass; backward only scales the stored gradients.

    With g = dL/dpre = 2/N (x_hat - x) * [pre > 0]:  dE = g^T h (decode) + X^T (g E) (encode),
    db = sum_rows g. For the ReLU model g is computed only on the columns that are on in some row
    of the batch (after a little training most outputs are off for a whole batch). The matmuls run in ``compute_dtype`` (bf16 on AMX CPUs / CUDA), the
    accumulation and the master weights in fp32.
    """

    @staticmethod
    def forward(ctx, E, b, ids, offsets, rows, n, relu, compute_dtype):
        V = E.shape[0]
        N = n * V
        Ec = E.detach().to(compute_dtype)
        h = F.embedding_bag(ids, Ec, offsets, mode="sum")
        pre = torch.addmm(b.detach().to(compute_dtype), h, Ec.T)
        if relu:
            # dL/dpre is zero wherever the unit is off (pre <= 0, whatever the target), so the
            # decode's backward only needs the columns that are on somewhere in this batch
            cols = (pre > 0).any(0).nonzero().squeeze(1)
            k = len(cols)
            where = torch.full((V,), -1, dtype=torch.int64, device=E.device)
            where[cols] = torch.arange(k, device=E.device)
            g = pre.index_select(1, cols).float().clamp_(min=0)          # [n, k]
            j = where[ids]
            on = j >= 0
            flat = rows[on] * k + j[on]
            hit = g.view(-1).index_select(0, flat)
            loss = (g.square().sum() - 2 * hit.sum() + len(ids)) / N
            g.view(-1).index_add_(0, flat, -(hit > 0).to(g.dtype))
            Eu = Ec.index_select(0, cols)
        else:
            cols, g = None, pre.float()
            flat = rows * V + ids
            hit = g.view(-1).index_select(0, flat)
            loss = (g.square().sum() - 2 * hit.sum() + len(ids)) / N
            g.view(-1).index_add_(0, flat, -torch.ones_like(hit))
            Eu = Ec
        g.mul_(2.0 / N)
        gc = g.to(compute_dtype)
        gh = (gc @ Eu).float()
        gEu = gc.T @ h
        xt = _transpose_csr(ids, rows, n, V, torch.float32)
        gE = xt @ gh                                                  # encode term X^T (g E)
        if cols is None:
            gE.add_(gEu.float())
            gb = g.sum(0)
        else:
            gE.index_add_(0, cols, gEu.float())
            gb = torch.zeros(V, dtype=torch.float32, device=E.device).index_copy_(0, cols, g.sum(0))
        ctx.save_for_backward(gE, gb)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        gE, gb = ctx.saved_tensors
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
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:  # Linux only; elsewhere stay in fp32
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags
