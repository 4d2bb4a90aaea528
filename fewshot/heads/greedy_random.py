"""The `greedy_random` head: random search that keeps only improvements, no gradients.

Per episode, from the configured start (`init`, default W = 0, b = 0; the "random greedy
search" of Chiang et al., 2023):

    each step: draw `candidates` points theta + sigma * N(0, I) (all weights and biases);
    take the one with the lowest decision loss if it is lower than the current loss;
    after `patience` steps in a row without a move, sigma *= shrink (and the count restarts)
    stop at 100% support accuracy (and decision loss <= the band's upper edge / below
    `loss_threshold` when set, checked every `check_every` accepted moves), at
    sigma < min_sigma, or after max_steps steps.

The seed's schedule is sigma = 1, shrink = 0.5, patience = 100, candidates = M - 1; the
defaults here are tuned for L2-normalized features. The decision loss is raw cross-entropy or
normalized by the full or span norm (`fewshot.heads.losses`).

The noise moves every weight, also along directions the support set cannot see, as the seed's
does: that is the point of comparing it with gradient descent. A candidate's logits are the
current logits plus X @ noise, so a step is one batched matmul for all episodes.

Example:
    >>> head = get_head("greedy_random", sigma=0.1, candidates=8)
    >>> fit = head.fit(support, labels, n_way=5, generator=torch.Generator().manual_seed(0))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import linear_accuracy, linear_loss, validate_inputs, with_bias_column
from fewshot.heads.head_model import HeadModel, ModelSettings, model_of, model_rules
from fewshot.heads.losses import normalized_loss, span_gram_pinv, span_norm_sq
from fewshot.heads.protocol import FitProtocol, fit_with_protocol, protocol_rules, reached_stop
from fewshot.heads.runtimes import RuntimeTracker
from fewshot.heads.starts import draw_start

FITTED, MIN_SIGMA, BUDGET = 0, 1, 2  # stop reason codes reported in stats["stop_reason"]


@register_head("greedy_random")
class GreedyRandomHead(HeadOptimizer):
    """Greedy random search on the support decision loss (see the module doc)."""

    @dataclass
    class Config(FitProtocol, ModelSettings):
        """Args (and those of `FitProtocol`: init, loss, band, check_every, on_failure; and of
        `ModelSettings`: model, width, depth; a network's candidates go through its forward pass):
            sigma: initial standard deviation of the noise added to every parameter.
            shrink: factor applied to sigma after `patience` failed steps in a row.
            patience: failed steps in a row before sigma shrinks.
            min_sigma: stop once sigma falls below this.
            max_steps: budget of steps per episode.
            candidates: noisy points drawn per step; the best one is taken if it improves.
            loss_threshold: also require decision loss below this to stop as fitted; None and
                no band: the first-fit stop (the first 100%-accurate point checked).
        """

        sigma: float = 0.1
        shrink: float = 0.5
        patience: int = 20
        min_sigma: float = 1e-4
        max_steps: int = 5000
        candidates: int = 4
        loss_threshold: float | None = None

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.sigma > 0, "sigma", "> 0"), (0 < c.shrink < 1, "shrink", "in (0, 1)"),
                (c.patience >= 1, "patience", ">= 1"), (c.min_sigma > 0, "min_sigma", "> 0"),
                (c.max_steps >= 0, "max_steps", ">= 0"), (c.candidates >= 1, "candidates", ">= 1"),
                (c.loss_threshold is None or c.loss_threshold > 0, "loss_threshold", "> 0 or null")] + protocol_rules(c) \
            + model_rules(c)

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        return fit_with_protocol(lambda x, y, g: self._fit_once(x, y, n_way, g), support.float(), labels.long(),
                                 generator, self.config, self.config.loss_threshold)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, norm_sq: torch.Tensor | None,
              pinv: torch.Tensor | None) -> torch.Tensor:
        """Decision loss [A] or [A, K] of logits [A, (K,) S, N]; `norm_sq` is the full norm's square."""
        kind = self.config.loss
        if kind == "raw":
            return linear_loss(logits, labels)
        norm_sq = norm_sq if kind == "full_norm" else span_norm_sq(logits, pinv)
        return normalized_loss(logits, labels, norm_sq.sqrt())

    def _fit_once(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator) -> HeadFit:
        c = self.config
        episodes, shots, dim = support.shape
        device = support.device
        if c.model != "linear":
            return self._fit_model(model_of(c), support, labels, n_way, generator)
        # A column of ones makes the bias the last row of one parameter matrix [E, D + 1, N].
        features = with_bias_column(support)
        pinv = span_gram_pinv(support).to(support.dtype) if c.loss == "span_norm" else None
        params = draw_start(c.init, c.init_scale, (episodes, dim + 1, n_way), generator, device)
        logits = torch.bmm(features, params)
        loss = self._loss(logits, labels, params.square().sum((1, 2)), pinv)
        sigma = torch.full((episodes,), c.sigma, device=device)
        failures = torch.zeros(episodes, dtype=torch.long, device=device)
        steps, accepted = torch.zeros_like(failures), torch.zeros_like(failures)
        reason = torch.full((episodes,), -1, dtype=torch.long, device=device)
        every = torch.arange(episodes, device=device)
        tracker = RuntimeTracker(episodes, c.targets, device)  # the start reached what it reached at 0
        tracker.observe(every, loss.unsqueeze(1), torch.ones(episodes, 1, dtype=torch.bool, device=device), steps - 1)
        while True:
            accurate = linear_accuracy(logits, labels) == 1.0
            tracker.fitted_at(every, torch.where(accurate, (steps * c.candidates).double(), torch.inf))
            fitted = reached_stop(accurate, loss, c, c.loss_threshold)
            fitted &= accepted % c.check_every == 0  # checked every `check_every` accepted moves
            stop = torch.where(steps >= c.max_steps, BUDGET, -1)
            stop = torch.where(sigma < c.min_sigma, MIN_SIGMA, stop)
            reason = torch.where(reason < 0, torch.where(fitted, FITTED, stop), reason)
            active = (reason < 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            noise = torch.randn(len(active), c.candidates, dim + 1, n_way, generator=generator,
                                device=generator.device).to(device)
            noise *= sigma[active].view(-1, 1, 1, 1)
            # Candidate logits [A, K, S, N] = logits + X @ noise, for all candidates in one bmm.
            stacked = noise.permute(0, 2, 1, 3).reshape(len(active), dim + 1, -1)   # [A, D + 1, K * N]
            moved_logits = torch.bmm(features[active], stacked)
            trial_logits = logits[active].unsqueeze(1) + moved_logits.view(
                len(active), shots, c.candidates, n_way).transpose(1, 2)
            trial_norm_sq = None
            if c.loss == "full_norm":  # ||theta + e||^2 = ||theta||^2 + 2 <theta, e> + ||e||^2
                flat, current = noise.flatten(2), params[active].flatten(1)
                trial_norm_sq = (current.square().sum(1, keepdim=True) + flat.square().sum(2)
                                 + 2 * torch.bmm(flat, current.unsqueeze(2)).squeeze(2))
            trial_loss = self._loss(trial_logits, labels[active].unsqueeze(1), trial_norm_sq,
                                    None if pinv is None else pinv[active])              # [A, K]
            tracker.observe(active, trial_loss, torch.ones_like(trial_loss, dtype=torch.bool),
                            steps[active] * c.candidates)
            best_loss, best = trial_loss.min(dim=1)
            better = best_loss < loss[active]
            won, pick = active[better], best[better]
            rows = better.nonzero().squeeze(1)
            params[won] += noise[rows, pick]
            logits[won] = trial_logits[rows, pick]
            loss[won] = best_loss[better]
            _count_round(active, better, accepted, failures, sigma, steps, c)
        stats = {**tracker.stats(steps * c.candidates, (dim + 1) * n_way), "steps": steps, "accepted": accepted, "sigma": sigma, "stop_reason": reason,
                 "support_loss": loss}
        return HeadFit(params[:, :dim].contiguous(), params[:, dim].contiguous(),
                       stats={name: value.float() for name, value in stats.items()})

    def _fit_model(self, model: HeadModel, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                   generator: torch.Generator) -> HeadFit:
        """The same search on any head model's flat parameters (a network: its forward pass per
        candidate, all candidates of all episodes in one `model.logits` call)."""
        c = self.config
        episodes, _, dim = support.shape
        device = support.device
        params = model.draw_start(c.init, c.init_scale, episodes, dim, n_way, generator, device)

        def losses(candidates: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model.logits(candidates, support[rows])                                   # [A, K, S, N]
            norm_sq = model.full_norm_sq(candidates, dim) if c.loss == "full_norm" else None
            return self._loss(logits, labels[rows].unsqueeze(1), norm_sq, None), logits

        every = torch.arange(episodes, device=device)
        loss, logits = (part.squeeze(1) for part in losses(params.unsqueeze(1), every))
        sigma = torch.full((episodes,), c.sigma, device=device)
        failures = torch.zeros(episodes, dtype=torch.long, device=device)
        steps, accepted = torch.zeros_like(failures), torch.zeros_like(failures)
        reason = torch.full((episodes,), -1, dtype=torch.long, device=device)
        tracker = RuntimeTracker(episodes, c.targets, device)
        tracker.observe(every, loss.unsqueeze(1), torch.ones(episodes, 1, dtype=torch.bool, device=device), steps - 1)
        while True:
            accurate = linear_accuracy(logits, labels) == 1.0
            tracker.fitted_at(every, torch.where(accurate, (steps * c.candidates).double(), torch.inf))
            fitted = reached_stop(accurate, loss, c, c.loss_threshold) & (accepted % c.check_every == 0)
            stop = torch.where(steps >= c.max_steps, BUDGET, -1)
            stop = torch.where(sigma < c.min_sigma, MIN_SIGMA, stop)
            reason = torch.where(reason < 0, torch.where(fitted, FITTED, stop), reason)
            active = (reason < 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            noise = torch.randn(len(active), c.candidates, params.shape[1], generator=generator,
                                device=generator.device).to(device) * sigma[active].view(-1, 1, 1)
            trial = params[active].unsqueeze(1) + noise
            trial_loss, trial_logits = losses(trial, active)
            tracker.observe(active, trial_loss, torch.ones_like(trial_loss, dtype=torch.bool), steps[active] * c.candidates)
            best_loss, best = trial_loss.min(dim=1)
            better = best_loss < loss[active]
            won, pick, rows = active[better], best[better], better.nonzero().squeeze(1)
            params[won] = trial[rows, pick]
            logits[won] = trial_logits[rows, pick]
            loss[won] = best_loss[better].to(loss.dtype)
            _count_round(active, better, accepted, failures, sigma, steps, c)
        stats = {**tracker.stats(steps * c.candidates, params.shape[1]), "steps": steps, "accepted": accepted,
                 "sigma": sigma, "stop_reason": reason, "support_loss": loss}
        return model.head_fit(params, dim, n_way, {name: value.float() for name, value in stats.items()})


def _count_round(active: torch.Tensor, better: torch.Tensor, accepted: torch.Tensor, failures: torch.Tensor,
                 sigma: torch.Tensor, steps: torch.Tensor, c: GreedyRandomHead.Config) -> None:
    """After a round of episodes `active` (`better`: their best candidate was accepted): count the
    accepts and the rounds, and shrink sigma after `patience` failures in a row (in place)."""
    won, lost = active[better], active[~better]
    accepted[won] += 1
    failures[won] = 0
    failures[lost] += 1
    shrink = lost[failures[lost] >= c.patience]
    sigma[shrink] *= c.shrink
    failures[shrink] = 0
    steps[active] += 1
