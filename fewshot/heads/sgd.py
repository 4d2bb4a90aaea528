"""The `sgd` head: cross-entropy on the support set, fixed number of SGD (or Adam) steps.

From a zero start, SGD with momentum and weight decay keeps the weight in the span of the
support features, W = X^T A, so the logits are K A + b with the S x S Gram matrix K = X X^T.
The dual form updates A [S, N] instead of W [D, N]: the same iterates, about D / S times
fewer flops. Adam (per-coordinate scaling) and a random start leave the span, so they run in
the primal form.

Example:
    >>> head = get_head("sgd", lr=0.5, steps=100)
    >>> fit = head.fit(support, labels, n_way=5, generator=torch.Generator().manual_seed(0))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import (linear_logits, linear_loss, log_sum_exp, one_hot, softmax,
                                  validate_inputs)


@register_head("sgd")
class SGDHead(HeadOptimizer):
    """Full-batch or mini-batch gradient descent on the mean support cross-entropy.

    Weight decay applies to the weight only (the bias is not decayed), as `weight_decay * W`
    added to the gradient like `torch.optim.SGD`; momentum is torch's heavy ball (no dampening).
    """

    @dataclass
    class Config:
        """Args:
            steps: optimizer steps per episode.
            lr: learning rate (tuned for L2-normalized features).
            momentum: heavy-ball momentum of `sgd` (ignored by `adam`).
            weight_decay: L2 penalty coefficient on the weight.
            batch_size: support examples per step, drawn without replacement; 0 = all.
            init: `zero` (dual form possible) or `random` (uniform +-1/sqrt(D), like nn.Linear).
            optimizer: `sgd` or `adam` (betas 0.9, 0.999).
            bias: learn a bias per class.
            form: `auto` picks the Gram (dual) form whenever it is exact; `primal` forces the
                weight-space form (for checks and benchmarks).
        """

        steps: int = 100
        lr: float = 0.5
        momentum: float = 0.9
        weight_decay: float = 5e-4
        batch_size: int = 0
        init: Literal["zero", "random"] = "zero"
        optimizer: Literal["sgd", "adam"] = "sgd"
        bias: bool = True
        form: Literal["auto", "primal"] = "auto"

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.steps >= 0, "steps", ">= 0"), (c.lr > 0, "lr", "> 0"),
                (0 <= c.momentum < 1, "momentum", "in [0, 1)"),
                (c.weight_decay >= 0, "weight_decay", ">= 0"), (c.batch_size >= 0, "batch_size", ">= 0")]

    def learning_rate(self, step: int) -> float:
        """Learning rate of step `step` (0-based): constant here; subclasses schedule it."""
        return self.config.lr

    def averaged_steps(self) -> list[int]:
        """1-based steps whose iterates are averaged into the returned head; [] = the last iterate."""
        return []

    @property
    def uses_dual_form(self) -> bool:
        """Whether `fit` runs on the Gram matrix (exact only for SGD from a zero start)."""
        c = self.config
        return c.form == "auto" and c.optimizer == "sgd" and c.init == "zero"

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        support = support.float()
        if self.uses_dual_form:
            weight, bias = self._fit_dual(support, labels, n_way, generator)
        else:
            weight, bias = self._fit_primal(support, labels, n_way, generator)
        loss = linear_loss(linear_logits(support, weight, bias), labels)
        steps = torch.full_like(loss, float(self.config.steps))
        return HeadFit(weight, bias, stats={"support_loss": loss, "steps": steps})

    def _batch_rows(self, episodes: int, shots: int, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor | None:
        """Row indices [E, B] of this step's mini-batch, or None for the full batch."""
        size = self.config.batch_size
        if size == 0 or size >= shots:
            return None
        keys = torch.rand(episodes, shots, generator=generator, device=generator.device)
        return keys.argsort(dim=1)[:, :size].to(device)

    def _fit_dual(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator, row_weights: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD on the coefficients A of W = X^T A; returns (X^T A, b).

        `row_weights` [S] (summing to 1) weights the rows' losses; None is the plain mean."""
        c = self.config
        episodes, shots, _ = support.shape
        gram = torch.bmm(support, support.transpose(1, 2))                  # [E, S, S]
        targets = one_hot(labels, n_way, support.dtype)                     # [E, S, N]
        coef = support.new_zeros(episodes, shots, n_way)
        bias = support.new_zeros(episodes, n_way)
        coef_velocity, bias_velocity = torch.zeros_like(coef), torch.zeros_like(bias)
        average = _IterateAverage(self.averaged_steps())
        for step in range(c.steps):
            rows = self._batch_rows(episodes, shots, generator, support.device)
            if rows is None:
                residual = softmax(linear_logits(gram, coef, bias)).sub_(targets)
                residual = residual.div_(shots) if row_weights is None else residual.mul_(row_weights[:, None])
            else:
                # The loss only sees the batch rows, so dA is non-zero on those rows only.
                batch_gram = gram.gather(1, rows.unsqueeze(-1).expand(-1, -1, shots))
                batch_targets = targets.gather(1, rows.unsqueeze(-1).expand(-1, -1, n_way))
                batch_residual = softmax(linear_logits(batch_gram, coef, bias))
                batch_residual = batch_residual.sub_(batch_targets).div_(rows.shape[1])
                if row_weights is not None:      # unbiased: E[sum_batch w_i S / B g_i] = sum_i w_i g_i
                    batch_residual.mul_(row_weights[rows].unsqueeze(-1) * shots)
                residual = torch.zeros_like(coef).scatter_(
                    1, rows.unsqueeze(-1).expand(-1, -1, n_way), batch_residual)
            # grad_W = X^T residual + wd * X^T A = X^T (residual + wd * A); torch.optim.SGD's
            # momentum: v = momentum * v + grad; A -= lr * v.
            coef_velocity.mul_(c.momentum).add_(residual).add_(coef, alpha=c.weight_decay)
            coef.add_(coef_velocity, alpha=-self.learning_rate(step))
            if c.bias:
                bias_velocity.mul_(c.momentum).add_(residual.sum(dim=1))
                bias.add_(bias_velocity, alpha=-self.learning_rate(step))
            average.add(step + 1, coef, bias)
        # W is linear in A, so averaging A averages the weights.
        coef, bias = average.result(coef, bias)
        return torch.bmm(support.transpose(1, 2), coef), bias

    def _fit_primal(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                    generator: torch.Generator, row_weights: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.optim on batched parameters: both optimizers act per coordinate, so summing
        the episodes' losses gives every episode its own independent trajectory."""
        c = self.config
        episodes, shots, dim = support.shape
        weight = support.new_zeros(episodes, dim, n_way)
        if c.init == "random":
            bound = 1.0 / math.sqrt(dim)
            noise = torch.rand(episodes, dim, n_way, generator=generator, device=generator.device)
            weight = ((2 * noise - 1) * bound).to(support)
        bias = support.new_zeros(episodes, n_way)
        weight.requires_grad_(True)
        bias.requires_grad_(c.bias)
        groups = [{"params": [weight], "weight_decay": c.weight_decay}]
        if c.bias:
            groups.append({"params": [bias], "weight_decay": 0.0})
        if c.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=c.lr)
        else:
            optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)
        average = _IterateAverage(self.averaged_steps())
        for step in range(c.steps):
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate(step)
            rows = self._batch_rows(episodes, shots, generator, support.device)
            features, batch_labels = support, labels
            weights = None if row_weights is None else row_weights.expand(episodes, -1) * shots
            if rows is not None:
                features = support.gather(1, rows.unsqueeze(-1).expand(-1, -1, dim))
                batch_labels = labels.gather(1, rows)
                weights = None if weights is None else weights.gather(1, rows)
            optimizer.zero_grad(set_to_none=True)
            logits = linear_logits(features, weight, bias)
            if weights is None:
                linear_loss(logits, batch_labels).sum().backward()
            else:   # weighted mean: rows' cross-entropies times w_i * S, averaged
                row_loss = log_sum_exp(logits).squeeze(-1) - logits.gather(-1, batch_labels.unsqueeze(-1)).squeeze(-1)
                (row_loss * weights).mean(dim=1).sum().backward()
            optimizer.step()
            average.add(step + 1, weight.detach(), bias.detach())
        return average.result(weight.detach(), bias.detach())


class _IterateAverage:
    """Running mean of the (weight, bias) iterates of chosen 1-based steps (none: keep the last)."""

    def __init__(self, steps: list[int]):
        self.steps, self.count = set(steps), 0
        self.sums: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, step: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        if step in self.steps:
            self.count += 1
            self.sums = (weight.clone(), bias.clone()) if self.sums is None else \
                (self.sums[0].add_(weight), self.sums[1].add_(bias))

    def result(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sums is None:
            return weight, bias
        return self.sums[0] / self.count, self.sums[1] / self.count
