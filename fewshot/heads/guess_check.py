"""The `guess_check` head: draw random heads until one fits the support set.

Per episode (the "guess & check" optimizer of Chiang et al., 2023): draw weight and bias
uniformly from [-scale, scale] (or Gaussian with std `scale`) until a draw classifies every
support example correctly (and has support loss below `loss_threshold` when set). The number
of guesses used is a Monte Carlo estimate of 1 / (the fraction of the drawing distribution's
volume that fits the support set): the volume hypothesis made measurable. Feasible only for
few ways, shots and dimensions; after `max_guesses` the episode is reported `failed` and gets
its lowest-loss guess.

Guesses are drawn in batches for all episodes at once; which random number goes to which
guess depends on the batch layout, so results are reproducible for the same generator, batch
and config.

Example:
    >>> head = get_head("guess_check", distribution="gaussian", max_guesses=10_000)
    >>> fit = head.fit(support, labels, n_way=2, generator=torch.Generator().manual_seed(0))
    >>> fit.stats["guesses"], fit.stats["failed"]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import linear_accuracy, linear_loss, validate_inputs, with_bias_column
from fewshot.volume.exact_head import exact_settings, fit_exact_head

_BATCH_ELEMENTS = 1 << 23  # parameter values drawn per batch (all running episodes together)


@register_head("guess_check")
class GuessCheckHead(HeadOptimizer):
    """Random guessing until the support set is fitted; reports how many guesses it took."""

    @dataclass
    class Config:
        """Args:
            distribution: `uniform` on [-scale, scale] per parameter, or `gaussian` (std scale).
            scale: the half-width (uniform) or standard deviation (gaussian).
            bias: draw a bias too; without it the bias is 0.
            max_guesses: budget per episode; an episode that runs out is reported `failed`.
            loss_threshold: also require support loss below this; None = accuracy only.
            batch: guesses per episode per batch; 0 picks it from the problem size.
            method: `rejection` draws heads as above; `exact` samples the head rejection would
                accept with an unlimited budget, and its log10 P(fit) (stat `log10_volume`), in
                logit space (`fewshot.volume`). A uniform prior runs there as the Gaussian with
                std scale / sqrt(3): a CLT approximation (stat `clt_approximation`).
            exact: `fewshot.volume.SplittingSettings` for `exact` (chains, repeats, sweeps, ...).
        """

        distribution: Literal["uniform", "gaussian"] = "uniform"
        scale: float = 1.0
        bias: bool = True
        max_guesses: int = 100_000
        loss_threshold: float | None = None
        batch: int = 0
        method: Literal["rejection", "exact"] = "rejection"
        exact: dict[str, Any] = field(default_factory=dict)

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.scale > 0, "scale", "> 0"), (c.max_guesses >= 1, "max_guesses", ">= 1"),
                (c.loss_threshold is None or c.loss_threshold > 0, "loss_threshold", "> 0 or null"),
                (c.batch >= 0, "batch", ">= 0"), (exact_settings(self) is not None, "exact", "valid")]

    def _draw(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
        c = self.config
        if c.distribution == "gaussian":
            values = torch.randn(shape, generator=generator, device=generator.device) * c.scale
        else:
            values = (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * c.scale
        return values.to(device)

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        if self.config.method == "exact":
            return fit_exact_head(self, support, labels, n_way, generator=generator)
        c, labels = self.config, labels.long()
        support = support.float()
        episodes, shots, dim = support.shape
        device = support.device
        rows = dim + 1 if c.bias else dim
        features = with_bias_column(support) if c.bias else support
        params = support.new_zeros(episodes, rows, n_way)
        best_loss = torch.full((episodes,), math.inf, device=device)
        guesses = torch.zeros(episodes, dtype=torch.long, device=device)
        done = torch.zeros(episodes, dtype=torch.bool, device=device)
        while True:
            active = (~done & (guesses < c.max_guesses)).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            batch = c.batch or max(1, _BATCH_ELEMENTS // (len(active) * rows * n_way))
            draws = self._draw((len(active), batch, rows, n_way), generator, device)
            # Logits of every guess [A, B, S, N] in one bmm.
            logits = torch.bmm(features[active], draws.permute(0, 2, 1, 3).reshape(len(active), rows, -1))
            logits = logits.view(len(active), shots, batch, n_way).transpose(1, 2)
            loss = linear_loss(logits, labels[active].unsqueeze(1))                        # [A, B]
            fits = linear_accuracy(logits, labels[active].unsqueeze(1)) == 1.0
            if c.loss_threshold is not None:
                fits &= loss < c.loss_threshold
            allowed = torch.arange(batch, device=device) < (c.max_guesses - guesses[active]).unsqueeze(1)
            fits &= allowed
            found = fits.any(dim=1)
            first = fits.to(torch.uint8).argmax(dim=1)
            # Episodes still failing keep their lowest-loss guess so far.
            lowest, lowest_at = loss.masked_fill(~allowed, math.inf).min(dim=1)
            pick = torch.where(found, first, lowest_at)
            keep = found | (lowest < best_loss[active])
            chosen = draws[torch.arange(len(active), device=device), pick]
            params[active[keep]] = chosen[keep]
            picked_loss = torch.where(found, loss.gather(1, pick.unsqueeze(1)).squeeze(1), lowest)
            best_loss[active[keep]] = picked_loss[keep]
            guesses[active] += torch.where(found, first + 1, allowed.sum(dim=1))
            done[active] = found
        weight = params[:, :dim].contiguous()
        bias = params[:, dim].contiguous() if c.bias else support.new_zeros(episodes, n_way)
        stats = {"guesses": guesses.float(), "failed": (~done).float(), "support_loss": best_loss}
        return HeadFit(weight, bias, stats=stats)
