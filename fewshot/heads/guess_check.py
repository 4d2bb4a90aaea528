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
and config. Their losses come from the public episode loss (`EpisodeLoss.losses`: the head
model's logits, the raw or normalized loss, nothing counted); the head keeps its own counts
(`guesses` up to the first fit, `tested` and `fits` for the volume) and the band's low edge.
The same heads as the head's former in-head loss, and no slower: 0.83-0.93 of its time with
both on one thread (`bench/episode_loss_reuse.py`). The search runs on one torch thread, like
the episode loss; the former ran on torch's threads, which on the busy 2-core machine made the
evaluation 1.5-2.3x slower (a thread barrier per pass over small tensors).

`model: mlp` (issue 19) guesses networks: every parameter drawn from `distribution` at scale
`scale / sqrt(fan_in)` per layer, like the network's starts (`fewshot.heads.mlp_model`), the
whole network evaluated by the model. `method: exact` is logit-space and takes linear heads
(or the infinite-width network, `distribution: nngp`).

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
from fewshot.heads.common import validate_inputs
from fewshot.heads.episode_loss import EpisodeLoss, intra_op_threads
from fewshot.heads.guess_check_exact import exact_settings, fit_exact_head, nngp_settings
from fewshot.heads.head_model import MAX_DEPTH, ModelSettings, model_of
from fewshot.heads.losses import LossKind
from fewshot.heads.protocol import FitProtocol
from fewshot.heads.runtimes import RuntimeTracker, default_targets, targets_rule

_BATCH_ELEMENTS = 1 << 23  # parameter values drawn per batch (all running episodes together)


@register_head("guess_check")
class GuessCheckHead(HeadOptimizer):
    """Random guessing until the support set is fitted; reports how many guesses it took."""

    @dataclass
    class Config(ModelSettings):
        """Args (and those of `ModelSettings`: model, width, depth; `mlp` with method rejection):
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
                (c.distribution != "nngp" or nngp_settings(self) is not None, "nngp", "valid"),
                (c.model == "linear" or c.method == "rejection", "model",
                 "linear with method exact (exact guess & check works in logit space, where a finite network has no "
                 "Gaussian prior: for a network head use method: rejection, or distribution: nngp for its "
                 "infinite-width limit)"),
                (c.width >= 1, "width", ">= 1"), (1 <= c.depth <= MAX_DEPTH, "depth", f"1 or {MAX_DEPTH} (hidden layers)"),
                (c.model == "linear" or c.loss != "span_norm", "loss",
                 "raw or full_norm with model: mlp (span_norm projects a linear head onto the support span)"),
                (c.model == "linear" or c.bias, "bias", "true with model: mlp (a network's biases are part of it)")]

    def _guesses(self, episodes: int, batch: int, dim: int, n_way: int, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
        """Flat guesses [A, B, P] in the head model's layout (linear: weight rows, then the bias row)."""
        c, model = self.config, model_of(self.config)
        if c.model != "linear":
            return model.draw_start(c.distribution, c.scale, episodes * batch, dim, n_way, generator,
                                    device).view(episodes, batch, -1)
        draws = self._draw((episodes, batch, dim + 1 if c.bias else dim, n_way), generator, device)
        if not c.bias:  # no bias drawn: a zero bias row
            draws = torch.nn.functional.pad(draws, (0, 0, 0, 1))
        return draws.view(episodes, batch, -1)

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
        with intra_op_threads(1):
            return self._rejection(support.float(), labels.long(), n_way, generator)

    def _rejection(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                   generator: torch.Generator) -> HeadFit:
        """Guess in batches until every episode fitted or spent `max_guesses` (see the module doc)."""
        c, model = self.config, model_of(self.config)
        episodes, _, dim = support.shape
        device = support.device
        # Parameters drawn per guess (the batch size rule; a linear head without bias draws no bias row).
        drawn = ((dim + 1 if c.bias else dim) * n_way) if c.model == "linear" else model.n_params(dim, n_way)
        losses = EpisodeLoss(support, labels, n_way, protocol=FitProtocol(loss=c.loss), budget=c.max_guesses,
                             model=model, threads=None)
        params = support.new_zeros(episodes, model.n_params(dim, n_way))
        best_loss = torch.full((episodes,), math.inf, dtype=torch.float64, device=device)
        guesses = torch.zeros(episodes, dtype=torch.long, device=device)
        tested, fit_count = torch.zeros_like(guesses), torch.zeros_like(guesses)
        done = torch.zeros(episodes, dtype=torch.bool, device=device)
        tracker = RuntimeTracker(episodes, c.targets, device)
        while True:
            active = (~done & (guesses < c.max_guesses)).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            batch = c.batch or max(1, _BATCH_ELEMENTS // (len(active) * drawn))
            draws = self._guesses(len(active), batch, dim, n_way, generator, device)       # [A, B, P]
            loss, accurate = losses.losses(draws, active)                                 # [A, B]
            fits = accurate.clone()
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
        stats = {**tracker.stats(guesses, drawn), "guesses": guesses.float(), "failed": (~done).float(),
                 "support_loss": best_loss.float(), "tested": tested.float(), "fits": fit_count.float()}
        return model.head_fit(params, dim, n_way, stats)
