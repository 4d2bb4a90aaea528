"""The lowest attainable normalized loss of an episode, with a certified lower bound.

The span-normalized loss nl(z) = CE(z / rho(z)) takes the values CE(y) over the logits y of unit
span norm, rho(y)^2 = sum_c y_c^T G^+ y_c (G = [X, 1][X, 1]^T). Its minimum is at least
min { CE(y) : rho(y) <= 1 }, a convex problem: with G = U diag(lambda) U^T, y = U lambda^1/2 V
and rho(y) = ||V||_F, so it is CE over the unit Frobenius ball in V. Projected accelerated
gradient (FISTA) solves it; convexity gives the Frank-Wolfe bound
    CE* >= CE(V) + min_{||S|| <= 1} <grad, S - V> = CE(V) - ||grad|| - <grad, V>,
which holds for any V, so `lower` is certified whatever the iterations did. The full norm is at
least the span norm with equality at the span head, so `full_norm` has the same minimum.

A band whose upper edge is at or below `lower` is empty: no head has a normalized loss in it.

Example:
    >>> best = attainable_minimum(gram, labels, n_way)    # gram [E, S, S] of [X, 1]
    >>> best.value, best.lower, best.logits                # [E], [E], [E, S, N]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Attainable", "attainable_minimum"]


@dataclass
class Attainable:
    """Per episode: the loss reached (`value`), a certified lower bound of the minimum (`lower`), and
    the unit-span-norm logits [E, S, N] that reach `value`."""

    value: torch.Tensor
    lower: torch.Tensor
    logits: torch.Tensor


def _loss_and_grad(basis: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = basis @ v                                                        # [E, S, N]
    log_p = logits.log_softmax(-1)
    loss = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
    residual = log_p.exp() - torch.nn.functional.one_hot(labels, v.shape[-1]).to(v.dtype)
    return loss, basis.transpose(1, 2) @ residual / labels.shape[1]


def attainable_minimum(gram: torch.Tensor, labels: torch.Tensor, n_way: int, iterations: int = 400) -> Attainable:
    """min CE over the unit span-norm ball, per episode (see the module doc).

    Args:
        gram: [E, S, S] the support Gram with a ones column (any float dtype; solved in float64).
        labels: [E, S] support labels.
        n_way: classes.
        iterations: FISTA steps (the bound is certified for any number; more make it tighter).
    """
    values, vectors = torch.linalg.eigh(gram.double())
    tol = values.abs().amax(1, keepdim=True) * values.shape[1] * 1e-13
    basis = vectors * torch.where(values > tol, values, torch.zeros_like(values)).sqrt().unsqueeze(1)
    labels = labels.long()
    # The gradient's Lipschitz constant: softmax curvature <= 1/2 per point, mean over S points.
    step = labels.shape[1] / (0.5 * values.amax(1).clamp_min(1e-300))
    v = torch.zeros(gram.shape[0], gram.shape[1], n_way, dtype=torch.float64)
    previous, momentum = v, v
    for i in range(iterations):
        _, grad = _loss_and_grad(basis, momentum, labels)
        current = _project(momentum - step[:, None, None] * grad)
        momentum = current + (i / (i + 3)) * (current - previous)
        previous = current
    loss, grad = _loss_and_grad(basis, previous, labels)
    gap = grad.flatten(1).norm(dim=1) + (grad * previous).sum((1, 2))
    return Attainable(loss, loss - gap.clamp_min(0), basis @ previous)


def _project(v: torch.Tensor) -> torch.Tensor:
    """Onto the unit Frobenius ball, per episode."""
    norm = v.flatten(1).norm(dim=1).clamp_min(1.0)
    return v / norm[:, None, None]
