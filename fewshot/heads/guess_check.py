"""The `guess_check` head: draw random heads until one fits the support set.

Per episode (the "guess & check" optimizer of Chiang et al., 2023): draw weight and bias
uniformly from [-scale, scale] (or Gaussian with std `scale`) until a draw classifies every
support example correctly (and, when set, has decision loss below `loss_threshold` and in
the `band` (low, high]; `loss` picks raw or norm-normalized cross-entropy, see
`fewshot.heads.losses`). Feasible only for few ways, shots and dimensions; after
`max_guesses` the episode is reported `failed` and gets its lowest-loss guess.

The volume of the fitting region (the fraction of the drawing distribution that fits the
support set: the volume hypothesis made measurable) is estimated from pooled counts, fitted /
tested: every draw of every evaluated batch counts (also those after the first fit in its
batch), per episode in `stats["tested"]` and `stats["fits"]`, and the results pool them over
episodes. By Wald's identity E[fits] = p E[tested] under this stopping rule, so the pooled
ratio is consistent, unlike 1 / guesses (E[1 / G] > p).

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
from fewshot.heads.losses import LossKind, normalized_loss, span_gram_pinv, span_norm_sq
from fewshot.heads.guess_check_exact import exact_settings, fit_exact_head, nngp_settings
from fewshot.heads.runtimes import RuntimeTracker, default_targets, targets_rule

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
            loss: the loss of the threshold and band: `raw`, `full_norm` or `span_norm`.
            band: [low, high]: accept only guesses whose loss is in (low, high]; None: no band.
            method: `rejection` draws heads as above; `exact` samples the head rejection would
                accept with an unlimited budget, and its log10 P(accepted) (stat `log10_volume`),
                in logit space (`fewshot.volume`): with a normalized loss, a band (or threshold)
                is reached by one splitting run on the composite score (stats `band_empty`,
                `min_loss`, `tied`, `stalled`). A uniform prior runs there as the Gaussian with
                std scale / sqrt(3): a CLT approximation (stat `clt_approximation`).
            exact: `fewshot.volume.SplittingSettings` for `exact` (chains, repeats, sweeps, ...).
            nngp: with `distribution: nngp` (method `exact`, loss `raw` only), the prior of an
                infinitely wide ReLU network head, `fewshot.volume.nngp.NNGPSettings` (depth, s1,
                b1, s2, b2): the head is then a GP posterior draw (`NNGPPosterior`).
            targets: loss targets of the reported runtimes (`rejection`; `fewshot.heads.runtimes`).
        """

        distribution: Literal["uniform", "gaussian", "nngp"] = "uniform"
        scale: float = 1.0
        bias: bool = True
        max_guesses: int = 100_000
        loss_threshold: float | None = None
        batch: int = 0
        loss: LossKind = "raw"
        band: list[float] | None = None
        method: Literal["rejection", "exact"] = "rejection"
        exact: dict[str, Any] = field(default_factory=dict)
        nngp: dict[str, Any] = field(default_factory=dict)
        targets: list[float] = field(default_factory=default_targets)

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.scale > 0, "scale", "> 0"), (c.max_guesses >= 1, "max_guesses", ">= 1"),
                (c.loss_threshold is None or c.loss_threshold > 0, "loss_threshold", "> 0 or null"),
                (c.batch >= 0, "batch", ">= 0"),
                (c.band is None or (len(c.band) == 2 and 0 <= c.band[0] < c.band[1]), "band",
                 "null or [low, high] with 0 <= low < high"),
                (exact_settings(self) is not None, "exact", "valid"), targets_rule(c.targets),
                (c.method == "rejection" or c.loss != "raw" or c.band is None, "band",
                 "null with method exact and loss raw (a band needs loss: span_norm or full_norm)"),
                (c.loss != "full_norm" or c.bias, "bias", "true with loss full_norm (the norm of [W; b])"),
                (c.distribution != "nngp" or c.method == "exact", "method",
                 "exact with distribution nngp (rejection draws finite heads; the NNGP is the infinite-width limit)"),
                (c.distribution != "nngp" or c.loss == "raw", "loss",
                 "raw with distribution nngp (the NNGP describes the logits, not the weights a norm needs)"),
                (c.distribution != "nngp" or nngp_settings(self) is not None, "nngp", "valid")]

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
        tested, fit_count = torch.zeros_like(guesses), torch.zeros_like(guesses)
        pinv = span_gram_pinv(support) if c.loss == "span_norm" else None
        done = torch.zeros(episodes, dtype=torch.bool, device=device)
        tracker = RuntimeTracker(episodes, c.targets, device)
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
            if c.loss != "raw":
                norm_sq = draws.double().square().sum((2, 3)) if c.loss == "full_norm" \
                    else span_norm_sq(logits, pinv[active])
                loss = normalized_loss(logits.double(), labels[active].unsqueeze(1), norm_sq.sqrt()).float()
            fits = linear_accuracy(logits, labels[active].unsqueeze(1)) == 1.0
            accurate = fits.clone()
            if c.loss_threshold is not None:
                fits &= loss < c.loss_threshold
            if c.band is not None:
                fits &= (loss > c.band[0]) & (loss <= c.band[1])
            allowed = torch.arange(batch, device=device) < (c.max_guesses - guesses[active]).unsqueeze(1)
            fits &= allowed
            # Evaluations as `guesses` counts them: up to the first accepted guess, else all allowed.
            counted = allowed & (fits.cumsum(dim=1) - fits.long() < 1)
            tracker.observe(active, loss, counted, guesses[active], accurate)
            tested[active] += allowed.sum(dim=1)
            fit_count[active] += fits.sum(dim=1)
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
        stats = {**tracker.stats(guesses, rows * n_way), "guesses": guesses.float(), "failed": (~done).float(), "support_loss": best_loss,
                 "tested": tested.float(), "fits": fit_count.float()}
        return HeadFit(weight, bias, stats=stats)
