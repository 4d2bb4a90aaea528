"""The `logistic_regression` head: L2-regularized multinomial logistic regression (the RFS head).

Minimizes, per episode, C * sum_s CE(x_s W + b, y_s) + 0.5 * ||W||_F^2 (bias not
regularized: scikit-learn's meaning of C) to convergence with Newton's method, conjugate-
gradient inner solves on Hessian products, all episodes at once.

The optimal W lies in the span of the support features, so the problem is solved on S-dim
coordinates Z with Z Z^T = X X^T (a Cholesky factor of the Gram matrix): the same logits and
the same regularizer as W = X^T A, with S + 1 rows of parameters instead of D + 1. At the
optimum, C X^T (P - Y) + W = 0, so the weight is read off as W = C X^T (Y - P).

Softmax ignores adding a constant to every bias, so the bias is fixed by the extra term
0.5 * (sum_k b_k)^2, which is zero at the chosen solution: the bias sums to zero, and so do
the columns of W (as in scikit-learn's multinomial fit).

Example:
    >>> fit = get_head("logistic_regression", C=1.0).fit(support, labels, 5, generator=gen)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import (linear_logits, linear_loss, log_sum_exp, one_hot,
                                  validate_inputs, with_bias_column)

_ARMIJO = 1e-4      # sufficient-decrease constant of the backtracking line search
_HALVINGS = 30      # line-search halvings before a step is given up


def _gram_factor(support: torch.Tensor) -> torch.Tensor:
    """A factor Z [E, S, S] (float64) with Z Z^T = X X^T: the support features' coordinates in
    an orthonormal basis of their span, up to rotation.

    Cholesky where the Gram matrix is positive definite; a symmetric square root (eigenvalues
    clamped at 0) for the episodes where it is singular, e.g. duplicate support features.
    """
    gram = torch.bmm(support, support.transpose(1, 2)).double()
    factor, info = torch.linalg.cholesky_ex(gram)
    failed = info != 0
    if bool(failed.any()):
        eigenvalues, eigenvectors = torch.linalg.eigh(gram[failed])
        factor[failed] = eigenvectors * eigenvalues.clamp(min=0).sqrt().unsqueeze(1)
    return factor


def _dot(a: torch.Tensor, b: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Per-episode inner product of [E, ...] tensors: [E] (or [E, 1, 1] with keepdim)."""
    result = torch.linalg.vecdot(a.flatten(1), b.flatten(1))
    return result[:, None, None] if keepdim else result


@register_head("logistic_regression")
class LogisticRegressionHead(HeadOptimizer):
    """Batched Newton-CG with backtracking line search on S-dim coordinates in float64
    (the D-dim work, X X^T and W = X^T A, runs in float32)."""

    @dataclass
    class Config:
        """Args:
            C: inverse regularization strength (larger C = weaker L2 penalty on W).
            max_iter: Newton iterations at most.
            tol: stop when every entry of every episode's objective gradient is below tol
                (scikit-learn's tol=1e-4 is on the gradient divided by C * S: ours is tighter).
        """

        C: float = 1.0
        max_iter: int = 50
        tol: float = 1e-5

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.C > 0, "C", "> 0"), (c.max_iter >= 1, "max_iter", ">= 1"), (c.tol > 0, "tol", "> 0")]

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        episodes, shots, _ = support.shape
        support = support.float()
        coordinates = _gram_factor(support)
        # Append a constant column: the last row of `params` is the bias.
        features = with_bias_column(coordinates)
        params = coordinates.new_zeros(episodes, shots + 1, n_way)
        targets = one_hot(labels, n_way, torch.float64)
        problem = (features, features.transpose(1, 2).contiguous(), targets)
        objective, gradient, probs = self._evaluate(params, problem)
        iterations = coordinates.new_zeros(episodes)
        for _ in range(self.config.max_iter):
            active = gradient.abs().amax(dim=(1, 2)) >= self.config.tol
            if not bool(active.any()):
                break
            step = self._newton_step(gradient, probs, problem)
            params, objective, gradient, probs = self._line_search(
                params, step, objective, gradient, problem, active)
            iterations += active.double()
        converged = gradient.abs().amax(dim=(1, 2)) < self.config.tol
        # The optimality condition C X^T (P - Y) + W = 0 gives W = X^T A, A = C (Y - P),
        # without inverting the factor (which would amplify round-off on near-dependent features).
        coefficients = (self.config.C * (targets - probs)).float()
        weight = torch.bmm(support.transpose(1, 2), coefficients)
        bias = params[:, -1].float()
        loss = linear_loss(linear_logits(support, weight, bias), labels)
        return HeadFit(weight, bias, stats={
            "support_loss": loss, "iterations": iterations.float(),
            "converged": converged.float()})

    def _evaluate(self, params: torch.Tensor, problem: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective [E], its gradient [E, S+1, N] and the softmax [E, S, N] at `params`.

        `problem` is (features [E, S, S+1], the same transposed [E, S+1, S], one-hot targets).
        """
        c = self.config.C
        features, features_t, targets = problem
        logits = torch.bmm(features, params)
        log_probs = logits - log_sum_exp(logits)
        weights, bias = params[:, :-1], params[:, -1]
        bias_sum = bias.sum(dim=1)
        objective = (-c * _dot(targets, log_probs) + 0.5 * _dot(weights, weights)
                     + 0.5 * bias_sum.square())
        probs = log_probs.exp()
        gradient = torch.baddbmm(params, features_t, probs - targets, alpha=c)
        gradient[:, -1] = gradient[:, -1] - bias + bias_sum.unsqueeze(1)
        return objective, gradient, probs

    def _hessian_product(self, direction: torch.Tensor, probs: torch.Tensor,
                         problem: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The objective's Hessian times `direction` [E, S+1, N], without forming the Hessian."""
        features, features_t, _ = problem
        change = torch.bmm(features, direction)                         # logit change [E, S, N]
        # Softmax curvature per support point: (diag(p) - p p^T) applied to the logit change.
        curved = probs * (change - (probs * change).sum(dim=2, keepdim=True))
        # Regularizers: identity on the weight rows, the ones matrix on the bias row.
        product = torch.baddbmm(direction, features_t, curved, alpha=self.config.C)
        bias = direction[:, -1]
        product[:, -1] = product[:, -1] - bias + bias.sum(dim=1, keepdim=True)
        return product

    def _newton_step(self, gradient: torch.Tensor, probs: torch.Tensor,
                     problem: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Approximately solve H step = -gradient per episode by conjugate gradients.

        The solve stops at a relative residual min(0.5, sqrt(|g|)) (inexact Newton, which keeps
        the convergence superlinear); H is positive definite, so every CG iterate descends.
        """
        norm = _dot(gradient, gradient, keepdim=True).sqrt()
        target = torch.minimum(norm.sqrt().clamp(max=0.5), norm.new_tensor(1.0)) * norm
        step = torch.zeros_like(gradient)
        residual = -gradient
        direction = residual
        squared = _dot(residual, residual, keepdim=True)
        for _ in range(gradient.shape[1] * gradient.shape[2]):
            if bool((squared.sqrt() <= target).all()):
                break
            curved = self._hessian_product(direction, probs, problem)
            curvature = _dot(direction, curved, keepdim=True)
            alpha = torch.where(curvature > 0, squared / curvature.clamp(min=1e-300), 0.0)
            alpha = torch.where(squared.sqrt() <= target, 0.0, alpha)   # this episode is done
            step = step + alpha * direction
            residual = residual - alpha * curved
            new_squared = _dot(residual, residual, keepdim=True)
            direction = residual + torch.where(squared > 0, new_squared / squared.clamp(min=1e-300),
                                               0.0) * direction
            squared = new_squared
        return step

    def _line_search(self, params: torch.Tensor, step: torch.Tensor, objective: torch.Tensor,
                     gradient: torch.Tensor, problem: tuple[torch.Tensor, ...],
                     active: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backtracking (Armijo) from the full Newton step, per episode; inactive ones stay."""
        slope = _dot(gradient, step)
        scale = active.to(params.dtype)
        for _ in range(_HALVINGS):
            trial = params + scale[:, None, None] * step
            new_objective, new_gradient, new_probs = self._evaluate(trial, problem)
            accept = new_objective <= objective + _ARMIJO * scale * slope
            if bool(accept.all()):
                return trial, new_objective, new_gradient, new_probs
            scale = torch.where(accept, scale, scale / 2)
        # Episodes whose step never passed keep their current point.
        trial = torch.where(accept[:, None, None], trial, params)
        return (trial, *self._evaluate(trial, problem))
