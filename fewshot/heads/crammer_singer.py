"""Batched Crammer-Singer multiclass SVM in Gram (dual) form: the solver behind `max_margin`.

Primal, per episode, with x~ = (x, 1) (the bias is a weight on a constant feature, so it is
part of the norm, as in liblinear's intercept and as in gradient descent's implicit bias):

    min_W  1/2 ||W||_F^2 + C sum_i xi_i   s.t.  w_{y_i} . x~_i - w_m . x~_i >= 1 - xi_i  (m != y_i)

C = inf is the hard margin. Dual (Crammer & Singer 2001; Keerthi et al. 2008): W = X~^T alpha,

    max_alpha  sum_i alpha_{i, y_i} - 1/2 tr(alpha^T K alpha),   K = X~ X~^T,
    s.t. sum_m alpha_{i, m} = 0,  alpha_{i, m} <= 0 (m != y_i),  alpha_{i, y_i} <= C.

Solved by accelerated projected gradient (FISTA with adaptive restart) on all episodes at once;
each row's projection onto its constraint set is exact (a sorted-breakpoint formula). Each
episode stops on its own certificate, the relative duality gap (P - D) / P, where P is the
primal value of W(alpha) (hard margin: of W(alpha) rescaled to functional margin 1).

Every solve is remembered by content (Gram matrix, labels, C, settings) for `remembered_dual`: the
diagnostics' max-margin reference (`fewshot.run.diagnostics`) asks for the duals the `max_margin`
head already solved on the same chunk. `solve_dual` itself always solves, so a head's fit time is
its own.

Example:
    >>> alpha, gap = solve_dual(gram, labels, n_way=5, C=torch.full((E,), math.inf))
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import torch

from fewshot.heads.common import one_hot


def project_rows(values: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row v [..., N] onto {a : sum(a) = 0, a <= upper}.

    The projection is a = min(v - tau, upper) with tau solving sum(a) = 0. Sorting the
    breakpoints v - upper, the rows with a = v - tau are a prefix of k of them, so
    tau = (sum of the prefix's v + sum of the rest's upper) / k; the right k is the one whose
    tau lies between its breakpoints. `upper` may hold +inf (an unbounded coordinate).

    Args:
        values: rows to project, [..., N].
        upper: the upper bounds, broadcastable to `values`; their sum must be >= 0.
    """
    upper = upper.expand_as(values)
    breaks, order = (values - upper).sort(dim=-1)
    sorted_values, sorted_upper = values.gather(-1, order), upper.gather(-1, order)
    prefix = sorted_values.cumsum(dim=-1)
    # Sums of upper over the suffix after k, from the right, so an infinite bound in the
    # prefix never meets inf - inf.
    suffix = sorted_upper.flip(-1).cumsum(dim=-1).flip(-1)
    suffix = torch.cat([suffix[..., 1:], torch.zeros_like(suffix[..., :1])], dim=-1)
    count = torch.arange(1, values.shape[-1] + 1, dtype=values.dtype, device=values.device)
    tau = (prefix + suffix) / count
    next_break = torch.cat([breaks[..., 1:], torch.full_like(breaks[..., :1], math.inf)], dim=-1)
    valid = (breaks < tau) & (tau <= next_break)
    first = valid.to(torch.int8).argmax(dim=-1, keepdim=True)   # ties give the same tau
    return torch.minimum(values - tau.gather(-1, first), upper)


def primal_dual(gram: torch.Tensor, alpha: torch.Tensor, targets: torch.Tensor, C: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(primal value P, dual value D, min functional margin) of the heads W = X~^T alpha, each [E].

    Hard-margin episodes (C = inf) take P of W rescaled to functional margin 1 (inf if some
    support point is not strictly on its side).
    """
    logits = torch.bmm(gram, alpha)                                          # [E, S, N]
    norm_sq = (alpha * logits).sum(dim=(1, 2))
    true = (logits * targets).sum(dim=2)
    other = logits.masked_fill(targets.bool(), -math.inf).amax(dim=2)
    margins = true - other                                                   # [E, S]
    dual = (alpha * targets).sum(dim=(1, 2)) - norm_sq / 2
    low = margins.amin(dim=1)
    hard = norm_sq / 2 / low.clamp(min=1e-300).square()
    hard = torch.where(low > 0, hard, math.inf)
    soft = norm_sq / 2 + torch.where(C.isinf(), 0.0, C) * (1 - margins).clamp(min=0).sum(dim=1)
    return torch.where(C.isinf(), hard, soft), dual, low


_SOLVED: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
_SOLVED_SIZE = 64   # chunks of episodes: a benchmark loops each head over all chunks of a setting in turn


def _solve_key(gram: torch.Tensor, labels: torch.Tensor, n_way: int, C: torch.Tensor, settings: tuple) -> str:
    digest = hashlib.sha1(f"{n_way}/{settings!r}/{gram.dtype}/{tuple(gram.shape)}/{gram.device}".encode())
    for tensor in (gram, labels, C):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def remembered_dual(gram: torch.Tensor, labels: torch.Tensor, n_way: int, C: torch.Tensor, *,
                    tol: float = 1e-7, max_iter: int = 20000, check_every: int = 10
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`solve_dual`'s result, from an earlier solve of the same problem when there was one (copies)."""
    remembered = _SOLVED.get(_solve_key(gram, labels, n_way, C, (tol, max_iter, check_every)))
    if remembered is None:
        return solve_dual(gram, labels, n_way, C, tol=tol, max_iter=max_iter, check_every=check_every)
    return tuple(value.clone() for value in remembered)


def solve_dual(gram: torch.Tensor, labels: torch.Tensor, n_way: int, C: torch.Tensor, *,
               tol: float = 1e-7, max_iter: int = 20000, check_every: int = 10
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dual coefficients alpha [E, S, N] of the Crammer-Singer SVM of every episode.

    Args:
        gram: [E, S, S] Gram matrix of the support features with a ones column (float64 advised).
        labels: [E, S] labels in [0, n_way).
        n_way: classes.
        C: [E] slack penalty per episode; inf = hard margin (the episode must be separable).
        tol: stop an episode at relative duality gap (P - D) / P <= tol.
        max_iter: iteration cap (episodes not at `tol` by then report their gap).
        check_every: iterations between gap checks.

    Returns:
        alpha, the relative duality gap [E], and the iterations run [E].
    """
    episodes = gram.shape[0]
    targets = one_hot(labels, n_way, gram.dtype)
    upper = (targets * C.to(gram.dtype)[:, None, None]).nan_to_num(nan=0.0)  # 0 * inf -> 0 off the label
    step = 1 / torch.linalg.eigvalsh(gram)[:, -1].clamp(min=1e-12)           # 1 / Lipschitz constant
    alpha = torch.zeros_like(targets)
    point, momentum = alpha.clone(), torch.ones(episodes, dtype=gram.dtype, device=gram.device)
    gap = torch.full((episodes,), math.inf, dtype=gram.dtype, device=gram.device)
    iterations = torch.zeros(episodes, dtype=gram.dtype, device=gram.device)
    active = torch.ones(episodes, dtype=torch.bool, device=gram.device)
    for iteration in range(1, max_iter + 1):
        gradient = torch.bmm(gram, point) - targets
        new = project_rows(point - step[:, None, None] * gradient, upper)
        # Adaptive restart (O'Donoghue & Candes): drop the momentum when it points uphill.
        uphill = ((point - new) * (new - alpha)).sum(dim=(1, 2)) > 0
        next_momentum = (1 + torch.sqrt(1 + 4 * momentum.square())) / 2
        beta = torch.where(uphill, 0.0, (momentum - 1) / next_momentum)
        momentum = torch.where(uphill, 1.0, next_momentum)
        new = torch.where(active[:, None, None], new, alpha)
        point = torch.where(active[:, None, None], new + beta[:, None, None] * (new - alpha), alpha)
        alpha = new
        iterations += active.to(iterations.dtype)
        if iteration % check_every == 0 or iteration == max_iter:
            primal, dual, _ = primal_dual(gram, alpha, targets, C)
            gap = torch.where(active, (primal - dual) / primal.clamp(min=1e-300), gap)
            active &= ~(gap <= tol)
            if not bool(active.any()):
                break
    _SOLVED[_solve_key(gram, labels, n_way, C, (tol, max_iter, check_every))] = (alpha.clone(), gap.clone(),
                                                                                iterations.clone())
    if len(_SOLVED) > _SOLVED_SIZE:
        _SOLVED.popitem(last=False)
    return alpha, gap, iterations
