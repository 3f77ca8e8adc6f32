"""Column-batched L-BFGS: k independent smooth problems solved in lockstep.

Parameters are one tensor theta [p, k]; column j is problem j. Every inner product, history pair,
step size and stopping test is per column, so a column's iterates do not depend on which other
columns share the batch (batched == alone up to matmul rounding), while the objective is still
evaluated with one matmul for all active columns. Converged columns drop out of the matmuls.

The line search is Armijo backtracking per column from the unit quasi-Newton step (which is
accepted almost always on convex logistic losses); pairs with non-positive curvature are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# objective(theta_sub [p, m], cols [m]) -> (loss [m] float64, grad [p, m])
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LbfgsResult:
    theta: torch.Tensor  # [p, k]
    loss: torch.Tensor  # [k] float64
    grad_max: torch.Tensor  # [k] max |gradient| at the solution
    n_iter: torch.Tensor  # [k] iterations used per column
    converged: (
        torch.Tensor
    )  # [k] bool: gradient test met (False: max_iter or line search stalled)


def batched_lbfgs(
    objective: Objective,
    theta0: torch.Tensor,
    max_iter: int = 500,
    tol: float = 1e-5,
    history: int = 10,
    max_ls: int = 30,
    c1: float = 1e-4,
    noise_rtol: float = 1e-6,
) -> LbfgsResult:
    """Minimise k independent objectives; `tol` is on the max-abs gradient of each column."""
    theta = theta0.clone()
    p, k = theta.shape
    dev, dt = theta.device, theta.dtype
    allcols = torch.arange(k, device=dev)
    f, g = objective(theta, allcols)
    S = torch.zeros(history, p, k, device=dev, dtype=dt)
    Yh = torch.zeros(history, p, k, device=dev, dtype=dt)
    rho = torch.zeros(history, k, device=dev, dtype=dt)
    gamma = torch.ones(k, device=dev, dtype=dt)
    n_iter = torch.zeros(k, dtype=torch.long, device=dev)
    gmax = g.abs().amax(0)
    done = gmax <= tol
    converged = done.clone()
    filled = 0
    slot = 0
    for it in range(max_iter):
        cols = (~done).nonzero().flatten()
        if cols.numel() == 0:
            break
        g_a = g[:, cols]
        # Two-loop recursion, newest pair first; empty (rho = 0) pairs are no-ops.
        q = g_a.clone()
        order = [(slot - 1 - j) % history for j in range(filled)]
        alphas = []
        for j in order:
            a = rho[j, cols] * (S[j][:, cols] * q).sum(0)
            q -= a * Yh[j][:, cols]
            alphas.append(a)
        r = gamma[cols] * q
        for j, a in zip(reversed(order), reversed(alphas)):
            b = rho[j, cols] * (Yh[j][:, cols] * r).sum(0)
            r += S[j][:, cols] * (a - b)
        d = -r
        if filled == 0:
            d = d / g_a.norm(dim=0).clamp_min(
                1.0
            )  # cautious first step, as torch.optim.LBFGS does
        gd = (g_a * d).sum(0)
        not_descent = gd >= 0
        if not_descent.any():  # fall back to steepest descent for those columns
            d[:, not_descent] = -g_a[:, not_descent]
            gd = (g_a * d).sum(0)
        x_a = theta[:, cols]
        f_a = f[cols]
        t = torch.ones(cols.numel(), device=dev, dtype=dt)
        x_new, f_new, g_new = x_a.clone(), f_a.clone(), g_a.clone()
        pending = torch.ones(cols.numel(), dtype=torch.bool, device=dev)
        for _ in range(max_ls):
            sub = pending.nonzero().flatten()
            x_try = x_a[:, sub] + t[sub] * d[:, sub]
            f_try, g_try = objective(x_try, cols[sub])
            ok = f_try <= f_a[sub] + c1 * t[sub].double() * gd[sub].double()
            # Near the optimum float32 rounding of the loss (~1e-7 relative) hides real decrease;
            # inside that noise band accept a step that lowers the gradient instead.
            noise = (f_try - f_a[sub]).abs() <= noise_rtol * f_a[sub].abs().clamp_min(
                1e-30
            )
            ok |= noise & (g_try.abs().amax(0) < g_a[:, sub].abs().amax(0))
            acc = sub[ok]
            x_new[:, acc], f_new[acc], g_new[:, acc] = (
                x_try[:, ok],
                f_try[ok],
                g_try[:, ok],
            )
            pending[acc] = False
            t[sub[~ok]] *= 0.5
            if not pending.any():
                break
        s = x_new - x_a
        yv = g_new - g_a
        sy = (s * yv).sum(0)
        yy = (yv * yv).sum(0)
        good = (sy > 1e-10 * yy.sqrt() * s.norm(dim=0)) & ~pending
        S[slot][:, cols] = torch.where(good, s, torch.zeros_like(s))
        Yh[slot][:, cols] = torch.where(good, yv, torch.zeros_like(yv))
        rho[slot, cols] = torch.where(
            good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy)
        )
        gamma[cols] = torch.where(good, sy / yy.clamp_min(1e-30), gamma[cols])
        slot = (slot + 1) % history
        filled = min(filled + 1, history)
        theta[:, cols], f[cols], g[:, cols] = x_new, f_new, g_new
        n_iter[cols] += 1
        gm = g_new.abs().amax(0)
        gmax[cols] = gm
        conv = gm <= tol
        converged[cols] = conv
        # A column whose line search found no decrease is at the float resolution of its loss.
        done[cols] = conv | pending
    return LbfgsResult(
        theta=theta, loss=f, grad_max=gmax, n_iter=n_iter, converged=converged
    )
