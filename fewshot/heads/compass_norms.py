"""The normalized decision loss of compass-search moves (`pattern_search` with `loss: full_norm`
or `span_norm`; `fewshot.heads.losses` defines the losses).

A move of parameter (d, n) by s changes column n of the support logits by s * x_d and the norm:
full norm ||theta||^2 + 2 s theta_p + s^2; span norm sum_c z_c^T G^+ z_c changes by
2 s x_d . (G^+ z_n) + s^2 x_d^T G^+ x_d, O(S) from the kept G^+ Z and the precomputed
x_d^T G^+ x_d. Every logit is divided by the new norm, so a candidate's loss costs O(S N).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot.heads.compass import SearchProblem
from fewshot.heads.losses import normalized_loss, span_gram_pinv

_SAFE_BOUND = 40.0  # exp(-2 * 40) is still a normal float32


@dataclass(frozen=True)
class NormTerms:
    """Fixed terms of the decision loss's norm: G^+ [E, S, S] and x_d^T G^+ x_d [E * (D + 1)]."""

    kind: str
    gram_pinv: torch.Tensor
    quad: torch.Tensor
    bound: torch.Tensor    # [E, S] ||[x_i, 1]||, a bound on |logit| / norm
    bounded: bool          # the bound is small enough to shift exp by (else shift by the max)

    @staticmethod
    def of(kind: str, problem: SearchProblem, support: torch.Tensor) -> "NormTerms":
        dtype = problem.columns.dtype
        columns = problem.columns.view(support.shape[0], -1, support.shape[1])
        bound = columns.square().sum(1).sqrt()
        bounded = bool(bound.numel() == 0 or float(bound.max()) < _SAFE_BOUND)
        if kind != "span_norm":
            empty = problem.columns.new_zeros(0)
            return NormTerms(kind, empty, empty, bound, bounded)
        pinv = span_gram_pinv(support)                                          # float64
        quad = ((columns.double() @ pinv) * columns.double()).sum(-1).clamp(min=0)
        return NormTerms(kind, pinv.to(dtype), quad.reshape(-1).to(dtype), bound, bounded)


def norm_terms(norms: NormTerms, ids: torch.Tensor, params: torch.Tensor,
               logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared norm [A], G^+ Z [A, N, S] or [A, 0, 0]) of the decision loss at a point.

    Args:
        norms: the fixed norm terms; ids: [A] batch rows; params: [A, P]; logits: [A, N, S].
    """
    rows = params.shape[0]
    if norms.kind == "span_norm":
        span = logits @ norms.gram_pinv[ids]                       # G^+ symmetric: (G^+ z_n)^T
        return (logits * span).sum((1, 2)).clamp(min=0), span
    empty = logits.new_zeros(rows, 0, 0)
    if norms.kind == "full_norm":
        return params.square().sum(1), empty
    return logits.new_ones(rows), empty


def decision_loss(logits: torch.Tensor, labels: torch.Tensor, norm_sq: torch.Tensor) -> torch.Tensor:
    """Normalized loss [A] of logits [A, N, S]."""
    return normalized_loss(logits.transpose(1, 2), labels, norm_sq.sqrt())


def normalized_trials(norms: NormTerms, ids: torch.Tensor, params: torch.Tensor, logits_now: torch.Tensor,
                      norm_sq_now: torch.Tensor, span_now: torch.Tensor, labels: torch.Tensor, param: torch.Tensor,
                      column: torch.Tensor, step: torch.Tensor, x: torch.Tensor, new: torch.Tensor,
                      feature_index: torch.Tensor) -> torch.Tensor:
    """Normalized loss [A, C] of candidate moves (param, step) whose column becomes `new` [A, C, S].

    Args:
        norms: fixed norm terms; ids, params [A, P], logits_now [A, N, S], norm_sq_now [A],
            span_now: the rows' batch index and state; labels: [A, S]; param, column, step: [A, C];
            x: [A, C, S] the moved feature; feature_index: [A, C] its row in the problem layout.
    """
    rows, chunk, shots = new.shape
    n_way = logits_now.shape[1]
    if norms.kind == "full_norm":
        cross, quad = params.gather(1, param), torch.ones_like(step)
    else:
        column_index = (torch.arange(rows, device=new.device).unsqueeze(1) * n_way + column).view(-1)
        span = span_now.reshape(-1, shots).index_select(0, column_index).view(rows, chunk, shots)
        cross, quad = (x * span).sum(-1), norms.quad[feature_index]
    norm_sq = (norm_sq_now.unsqueeze(1) + 2 * step * cross + step * step * quad).clamp(min=0)
    scale = torch.where(norm_sq > 0, norm_sq.clamp(min=torch.finfo(norm_sq.dtype).tiny).rsqrt(), 0.0)
    logits = logits_now.unsqueeze(1) * scale.view(rows, chunk, 1, 1)                     # [A, C, N, S]
    logits.scatter_(2, column.view(rows, chunk, 1, 1).expand(-1, -1, 1, shots),
                    (new * scale.unsqueeze(2)).unsqueeze(2))
    true = logits.gather(2, labels.view(rows, 1, 1, shots).expand(rows, chunk, 1, shots)).squeeze(2)
    # |logit| / norm <= ||[x_i, 1]|| (Cauchy-Schwarz, for either norm): shifting by that bound
    # keeps exp in range without a max over the classes.
    shift = norms.bound[ids].unsqueeze(1) if norms.bounded else logits.amax(dim=2)  # [A, C or 1, S]
    total = logits.sub_(shift.unsqueeze(2)).exp_().sum(dim=2)
    return (total.log() + shift - true).mean(dim=-1)
