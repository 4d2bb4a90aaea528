"""The `sgd` head: cross-entropy on the support set, fixed number of SGD (or Adam) steps.

SGD with momentum and weight decay moves the weight only inside the span of the support
features: its gradient is X^T R. So W_t = X^T A_t + c_t W0_perp, where W0 = X^T A_0 + W0_perp
splits the start into its in-span part (A_0 = G^+ X W0, G = X X^T) and the rest, and c_t is a
scalar: 1 forever without weight decay; with weight decay the out-of-span part decays like
the scalar recurrence v = momentum * v + wd * c; c -= lr * v. Since X W0_perp = 0, the logits
are G A + b. The dual form updates A [S, N] instead of W [D, N]: the same iterates, about D / S
times fewer flops, exact for every start (for a zero start c_t W0_perp is 0). Adam scales per
coordinate and leaves the span, so it runs in the primal form.

Stops (see `fewshot.heads.protocol`): with a `band`, an episode stops at the first checked step
(every `check_every` steps) with 100% support accuracy and decision loss <= the band's upper
edge, as the seed's SGD does; without one it runs all `steps`.

Cost: besides `steps`, every fit reports `forward_backward_evaluations` per episode: its steps
counted as forward + backward passes over the whole support set (a mini-batch step of B of
S points counts B / S; restarts add up). It is labelled so because the searching heads'
`evaluations` (`fewshot.heads.runtimes`) are forward passes only; a backward pass costs about
two forwards more.

Subclasses reuse the loop through three hooks: a per-step learning rate (`learning_rate`), the
steps whose iterates are averaged into the returned head (`averaged_steps`, the `swa` head),
and per-row loss weights (`row_weights` of `_fit_once`, the `poisoned` head).

Example:
    >>> head = get_head("sgd", lr=0.5, steps=100)
    >>> fit = head.fit(support, labels, n_way=5, generator=torch.Generator().manual_seed(0))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import (linear_accuracy, linear_logits, linear_loss, log_sum_exp, one_hot, softmax,
                                  validate_inputs)
from fewshot.heads.head_model import ModelSettings, model_of, model_rules
from fewshot.heads.losses import normalized_loss, span_gram_pinv, span_norm_sq
from fewshot.heads.mlp_sgd import fit_network
from fewshot.heads.protocol import FitProtocol, fit_with_protocol, protocol_rules, reached_stop
from fewshot.heads.starts import draw_start


@register_head("sgd")
class SGDHead(HeadOptimizer):
    """Full-batch or mini-batch gradient descent on the mean support cross-entropy.

    Weight decay applies to the weight only (the bias is not decayed), as `weight_decay * W`
    added to the gradient like `torch.optim.SGD`; momentum is torch's heavy ball (no dampening).
    """

    @dataclass
    class Config(FitProtocol, ModelSettings):
        """Args (and those of `FitProtocol`: init, loss, band, check_every, on_failure; and of
        `ModelSettings`: model, width, depth; `model: mlp` runs `fewshot.heads.mlp_sgd`):
            steps: optimizer steps per episode.
            lr: learning rate (tuned for L2-normalized features).
            momentum: heavy-ball momentum of `sgd` (ignored by `adam`).
            weight_decay: L2 penalty coefficient on the weight.
            batch_size: support examples per step, drawn without replacement; 0 = all.
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
        optimizer: Literal["sgd", "adam"] = "sgd"
        bias: bool = True
        form: Literal["auto", "primal"] = "auto"

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.steps >= 0, "steps", ">= 0"), (c.lr > 0, "lr", "> 0"),
                (0 <= c.momentum < 1, "momentum", "in [0, 1)"),
                (c.weight_decay >= 0, "weight_decay", ">= 0"), (c.batch_size >= 0, "batch_size", ">= 0")] + protocol_rules(c) \
            + model_rules(c)

    def learning_rate(self, step: int) -> float:
        """Learning rate of step `step` (0-based): constant here; subclasses schedule it."""
        return self.config.lr

    def averaged_steps(self) -> list[int]:
        """1-based steps whose iterates are averaged into the returned head; [] = the last iterate."""
        return []

    @property
    def uses_dual_form(self) -> bool:
        """Whether `fit` runs on the Gram matrix (exact for plain / momentum SGD from any start)."""
        c = self.config
        return c.form == "auto" and c.optimizer == "sgd"

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        return fit_with_protocol(lambda x, y, g: self._with_cost(self._fit_once(x, y, n_way, g), x.shape[1]),
                                 support.float(), labels, generator, self.config)

    def _with_cost(self, fit: HeadFit, shots: int) -> HeadFit:
        """`fit` with `forward_backward_evaluations` [E] (see the module doc) from its `steps`."""
        size = self.config.batch_size
        fraction = size / shots if 0 < size < shots else 1.0
        fit.stats["forward_backward_evaluations"] = fit.stats["steps"].float() * fraction
        return fit

    def _fit_once(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator, row_weights: torch.Tensor | None = None) -> HeadFit:
        """One fit from a fresh start; `row_weights` [S] (summing to 1) weights the rows' losses."""
        c = self.config
        if c.model != "linear":
            return fit_network(self, model_of(c), support, labels, n_way, generator,
                               _IterateAverage(self.averaged_steps()), row_weights)
        episodes, _, dim = support.shape
        start = draw_start(c.init, c.init_scale, (episodes, dim + 1, n_way), generator, support.device)
        weight0, bias0 = start[:, :dim], start[:, dim] if c.bias else start.new_zeros(episodes, n_way)
        fit = self._fit_dual if self.uses_dual_form else self._fit_primal
        weight, bias, steps = fit(support, labels, n_way, generator, weight0, bias0, row_weights)
        loss = linear_loss(linear_logits(support, weight, bias), labels)
        return HeadFit(weight, bias, stats={"support_loss": loss, "steps": steps.float()})

    def _stopped(self, support: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
                 norm_sq: torch.Tensor | None, pinv: torch.Tensor | None) -> torch.Tensor:
        """[E] episodes at a band stop (100% accuracy and decision loss <= high).

        Args:
            logits: [E, S, N] at the current point; norm_sq: [E] for the full norm; pinv:
                span G^+ [E, S, S] in the logits' dtype for the span norm.
        """
        c = self.config
        accurate = linear_accuracy(logits, labels) == 1.0
        if not bool(accurate.any()):  # the loss decides nothing before 100% accuracy
            return accurate
        if c.loss == "raw":
            norm = torch.ones_like(logits[:, 0, 0])
        elif c.loss == "full_norm":
            norm = norm_sq.sqrt()
        else:
            norm = span_norm_sq(logits, pinv).sqrt()
        return reached_stop(accurate, normalized_loss(logits, labels, norm), c)

    def _check(self, step: int) -> bool:
        return self.config.band is not None and step % self.config.check_every == 0

    def _batch_rows(self, episodes: int, shots: int, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor | None:
        """Row indices [E, B] of this step's mini-batch, or None for the full batch."""
        size = self.config.batch_size
        if size == 0 or size >= shots:
            return None
        keys = torch.rand(episodes, shots, generator=generator, device=generator.device)
        return keys.argsort(dim=1)[:, :size].to(device)

    def _fit_dual(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, generator: torch.Generator,
                  weight0: torch.Tensor, bias0: torch.Tensor, row_weights: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, ...]:
        """SGD on the coefficients A of W = X^T A + c W0_perp; returns (W, b, steps [E])."""
        c = self.config
        episodes, shots, _ = support.shape
        gram = torch.bmm(support, support.transpose(1, 2))                  # [E, S, S]
        targets = one_hot(labels, n_way, support.dtype)                     # [E, S, N]
        # The start's in-span coefficients A_0 = G^+ X W0 and its out-of-span part.
        wide = support.double()
        coef = (torch.linalg.pinv(gram.double(), hermitian=True) @ (wide @ weight0.double()))
        outside = (weight0.double() - wide.transpose(1, 2) @ coef).to(support.dtype)
        outside_sq = outside.flatten(1).square().sum(1)
        coef, bias = coef.to(support.dtype), bias0.clone()
        scale, scale_velocity = torch.ones_like(outside_sq), torch.zeros_like(outside_sq)
        coef_velocity, bias_velocity = torch.zeros_like(coef), torch.zeros_like(bias)
        pinv = span_gram_pinv(support).to(support.dtype) if c.loss == "span_norm" and c.band is not None else None
        steps = torch.zeros(episodes, dtype=torch.long, device=support.device)
        running = torch.ones(episodes, dtype=torch.bool, device=support.device)
        average = _IterateAverage(self.averaged_steps())
        for step in range(c.steps):
            logits = linear_logits(gram, coef, bias)  # [E, S, N] at the current point
            if self._check(step):
                norm_sq = None
                if c.loss == "full_norm":  # ||X^T A||^2 + c^2 ||W0_perp||^2 + ||b||^2
                    norm_sq = (coef * (gram @ coef)).sum((1, 2)) + scale.square() * outside_sq \
                        + bias.square().sum(1)
                running &= ~self._stopped(support, labels, logits, norm_sq, pinv)
                if not bool(running.any()):
                    break
            # Stopped episodes keep their point: their updates are scaled by 0.
            lr = self.learning_rate(step)
            rate = -lr if bool(running.all()) else -lr * running.to(coef.dtype)
            rows = self._batch_rows(episodes, shots, generator, support.device)
            if rows is None:
                residual = softmax(logits).sub_(targets)
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
            if c.bias:
                bias_velocity.mul_(c.momentum).add_(residual.sum(dim=1))
            # The out-of-span part sees only the weight decay: W_perp -> c W0_perp.
            scale_velocity.mul_(c.momentum).add_(scale, alpha=c.weight_decay)
            if isinstance(rate, float):
                coef.add_(coef_velocity, alpha=rate)
                bias.add_(bias_velocity, alpha=rate)
                scale.add_(scale_velocity, alpha=rate)
            else:
                coef.add_(coef_velocity * rate.view(-1, 1, 1))
                bias.add_(bias_velocity * rate.view(-1, 1))
                scale.add_(scale_velocity * rate)
            steps += running.long()
            average.add(step + 1, coef, bias, scale)
        # W is linear in (A, c), so averaging them averages the weights.
        coef, bias, scale = average.result(coef, bias, scale)
        weight = torch.bmm(support.transpose(1, 2), coef) + scale.view(-1, 1, 1) * outside
        return weight, bias, steps

    def _fit_primal(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, generator: torch.Generator,
                    weight0: torch.Tensor, bias0: torch.Tensor, row_weights: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, ...]:
        """torch.optim on batched parameters: both optimizers act per coordinate, so summing
        the episodes' losses gives every episode its own independent trajectory."""
        c = self.config
        episodes, shots, dim = support.shape
        weight, bias = weight0.clone(), bias0.clone()
        pinv = span_gram_pinv(support).to(support.dtype) if c.loss == "span_norm" and c.band is not None else None
        steps = torch.zeros(episodes, dtype=torch.long, device=support.device)
        running = torch.ones(episodes, dtype=torch.bool, device=support.device)
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
            if self._check(step):
                with torch.no_grad():
                    logits = linear_logits(support, weight, bias)
                    norm_sq = weight.flatten(1).square().sum(1) + bias.square().sum(1)
                    running &= ~self._stopped(support, labels, logits, norm_sq, pinv)
                if not bool(running.any()):
                    break
            kept = (weight.detach().clone(), bias.detach().clone())
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
            if not bool(running.all()):  # stopped episodes keep their point
                with torch.no_grad():
                    weight.copy_(torch.where(running.view(-1, 1, 1), weight, kept[0]))
                    bias.copy_(torch.where(running.view(-1, 1), bias, kept[1]))
            steps += running.long()
            average.add(step + 1, weight.detach(), bias.detach())
        weight, bias = average.result(weight.detach(), bias.detach())
        return weight, bias, steps


class _IterateAverage:
    """Running mean of the iterates (any tensors) of chosen 1-based steps (none: keep the last)."""

    def __init__(self, steps: list[int]):
        self.steps, self.count = set(steps), 0
        self.sums: list[torch.Tensor] | None = None

    def add(self, step: int, *iterate: torch.Tensor) -> None:
        if step in self.steps:
            self.count += 1
            self.sums = [part.clone() for part in iterate] if self.sums is None else \
                [total.add_(part) for total, part in zip(self.sums, iterate)]

    def result(self, *last: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.sums is None:
            return last
        return tuple(total / self.count for total in self.sums)
