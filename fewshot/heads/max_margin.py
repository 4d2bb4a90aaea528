"""The `max_margin` head: the multiclass hard-margin SVM (Crammer-Singer) of the support set.

Seed 003: gradient descent on cross-entropy over separable data converges in direction to this
head, max over W of min_i (w_{y_i} - w_m) . x~_i / ||W||_F with x~ = (x, 1): the bias is a weight
on a constant feature, so it counts in the norm, as it does for SGD's implicit bias. Solved in
Gram form by `fewshot.heads.crammer_singer` on all episodes at once, in float64.

Separability: a support set whose Gram matrix (with the ones column) has full rank S
(`fewshot.heads.span.SupportSpan.full_rank`) is separable under any labelling, so those episodes get
the hard margin (C = inf). The others (duplicated points, S > D + 1) get the soft margin with the
stated `C`; the stat `hard_margin`
is 1 where the returned head has no slack (it is then the hard-margin SVM too) and 0 where the
support set is not separable, or only with a margin too small for that C.

Example:
    >>> fit = get_head("max_margin").fit(support, labels, 5, generator=gen)
    >>> fit.stats["hard_margin"], fit.stats["duality_gap"]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import linear_logits, linear_loss, one_hot, validate_inputs, with_bias_column
from fewshot.heads.crammer_singer import primal_dual, solve_dual
from fewshot.heads.span import SupportSpan


@register_head("max_margin")
class MaxMarginHead(HeadOptimizer):
    """Crammer-Singer SVM: hard margin where the support set is separable, else soft with `C`."""

    @dataclass
    class Config:
        """Args:
            C: slack penalty of the soft margin used on support sets that are not certainly
                separable (rank-deficient Gram matrix); hard margin everywhere else.
            tol: relative duality gap at which an episode's solve stops (the head's direction
                is then within about sqrt(tol) of the optimum, usually much closer).
            max_iter: iteration cap of the batched solver.
        """

        C: float = 100.0
        tol: float = 1e-7
        max_iter: int = 20000

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.C > 0, "C", "> 0"), (0 < c.tol < 1, "tol", "in (0, 1)"), (c.max_iter >= 1, "max_iter", ">= 1")]

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        span = SupportSpan.of(support)
        gram, full_rank = span.gram, span.full_rank
        C = torch.where(full_rank, math.inf, self.config.C).to(gram)
        alpha, gap, iterations = solve_dual(gram, labels, n_way, C, tol=self.config.tol,
                                            max_iter=self.config.max_iter)
        _, _, low = primal_dual(gram, alpha, one_hot(labels, n_way, gram.dtype), C)
        theta = torch.bmm(with_bias_column(support.double()).transpose(1, 2), alpha).float()          # [E, D + 1, N]
        weight, bias = theta[:, :-1].contiguous(), theta[:, -1].contiguous()
        loss = linear_loss(linear_logits(support.float(), weight, bias), labels)
        return HeadFit(weight, bias, stats={
            "support_loss": loss,
            # Zero slack: every support point at functional margin >= 1 (up to the solve's gap).
            "hard_margin": (full_rank | (low >= 1 - math.sqrt(self.config.tol))).float(),
            "duality_gap": gap.float(), "steps": iterations.float()})
