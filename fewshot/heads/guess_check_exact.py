"""Guess & check made exact: the head it would accept with an unlimited budget, and the volume.

Guess & check draws heads from the prior until one fits the support set, so its accepted head
is the prior restricted to the fitting cone. Only the support logits decide acceptance, and
they are Gaussian (`LogitPrior`), so: sample support logits z in the cone with multilevel
splitting + LIN-ESS (`split_volume`, which also gives log10 P(fit)), pick one chain per episode,
then draw the weights given those logits from the Gaussian conditional (Matheron's rule):
theta = theta0 + Sigma X^T K^+ (z - X theta0) with theta0 ~ prior, X the support features with
a ones column and Sigma the prior covariance. The part of the weight outside the features' span
is theta0's, i.e. the prior's; the head reproduces z exactly on the support.

With a normalized loss (`span_norm`, `full_norm`) a band (low, high] or threshold is reached by
one splitting run on the composite score (`fewshot.volume.loss_level`) up to `high`, the lower
edge by rejection on the final chains; `full_norm` heads are built from the out-of-span state
the chains carried (`WeightNorm.weights`). A raw-loss threshold is applied by rejection on the
cone samples. An episode where no chain is accepted is `failed` and gets its lowest-loss chain
inside the region, or the zero head if it has none (a stalled run hands back nothing outside).

A uniform prior U[-a, a] is run as the Gaussian with s^2 = a^2 / 3 (the logits are sums of many
independent terms): a CLT approximation, reported as such in the stats (`clt_approximation`).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit, Predictor
from fewshot.heads.common import linear_loss, with_bias_column
from fewshot.heads.losses import normalized_loss, span_gram_pinv, span_norm_sq
from fewshot.typed import build_dataclass
from fewshot.volume.attainable import Attainable, attainable_minimum
from fewshot.volume.gaussian import LogitPrior, draw_given_first
from fewshot.volume.lin_ess import Constraints
from fewshot.volume.loss_level import LossLevel, WeightNorm
from fewshot.volume.nngp import NNGPSettings, nngp_kernel
from fewshot.volume.splitting import SplittingSettings, combine_runs, split_volume
from fewshot.volume.streams import Streams

__all__ = ["prior_scales", "fit_exact", "weights_given_logits", "normalized_level", "sample_losses", "attainable"]


def prior_scales(distribution: str, scale: float, bias: bool) -> tuple[float, float]:
    """(s, s_b) of the Gaussian that stands for the prior; uniform [-a, a] -> a / sqrt(3) (CLT)."""
    s = scale if distribution == "gaussian" else scale / math.sqrt(3)
    return s, s if bias else 0.0


def weights_given_logits(support: torch.Tensor, logits: torch.Tensor, prior: LogitPrior,
                         streams: Streams) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [E, D, N] and bias [E, N] drawn from the prior conditioned on support logits [E, S, N]."""
    episodes, _, dim = support.shape
    n_way = logits.shape[-1]
    x = support.double()
    noise = streams.randn((dim + 1, n_way))
    weight0, bias0 = noise[:, :dim] * prior.scale, noise[:, dim] * prior.bias_scale
    residual = logits - (x @ weight0 + bias0.unsqueeze(1))
    solved = prior.pseudo_inverse() @ residual                     # K^+ (z - X theta0), [E, S, N]
    weight = weight0 + prior.scale ** 2 * x.transpose(1, 2) @ solved
    bias = bias0 + prior.bias_scale ** 2 * solved.sum(dim=1)
    return weight, bias


def normalized_level(kind: str, support: torch.Tensor, labels: torch.Tensor, n_way: int, prior: LogitPrior,
                     high: torch.Tensor) -> LossLevel:
    """The loss level "normalized loss of `kind` <= high [E]" for a composite splitting run.

    Args:
        kind: `span_norm` (a function of the support logits) or `full_norm` (also the out-of-span
            state, `fewshot.volume.loss_level.WeightNorm`).
        support, labels: [E, S, D], [E, S]; prior: their logit prior.
        high: [E] the band's upper edge per episode.
    """
    labels, log_n = labels.long(), math.log(n_way)
    if kind == "span_norm":
        pinv, extra = span_gram_pinv(support), None
        norm = lambda z, state, rows: span_norm_sq(z, pinv[rows]).sqrt()  # noqa: E731
    elif kind == "full_norm":
        extra = WeightNorm.from_prior(prior, support.shape[2])
        norm = lambda z, state, rows: extra.norm_sq(z, state, rows).sqrt()  # noqa: E731
    else:
        raise fail(f"The loss level takes a normalized loss (span_norm or full_norm), not {kind!r}.",
                   "Set loss: span_norm or loss: full_norm.")

    def score(z: torch.Tensor, state: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        return log_n - normalized_loss(z.double(), labels[rows].unsqueeze(1), norm(z, state, rows))
    return LossLevel(score, (log_n - high.double()).clamp_min(0), extra)


def sample_losses(level: LossLevel, samples: torch.Tensor, extra: torch.Tensor | None, n_way: int) -> torch.Tensor:
    """Normalized losses [E, K] of sampled support logits [E, K, S, N] (extra [E, K, N, 2] or None)."""
    return math.log(n_way) - level.score(samples, extra, torch.arange(samples.shape[0]))


def attainable(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> Attainable:
    """The lowest attainable normalized loss of each episode (`fewshot.volume.attainable`)."""
    features = with_bias_column(support.double())
    return attainable_minimum(features @ features.transpose(1, 2), labels, n_way)


def fit_exact(support: torch.Tensor, labels: torch.Tensor, n_way: int, *, distribution: str, scale: float,
              bias: bool, loss_threshold: float | None, settings: SplittingSettings,
              generator: torch.Generator, loss: str = "raw", band: list[float] | None = None,
              nngp: NNGPSettings | None = None) -> HeadFit:
    """One exactly distributed accepted guess & check head per episode, and log10 P(accepted).

    Accepted: fits the support set, and with a normalized `loss` has it in `band` (low, high] (or
    below `loss_threshold`): one composite splitting run up to the upper edge, the lower edge by
    rejection on the final chains. A band wholly below the attainable minimum is `band_empty` at
    once. With the raw loss a threshold is applied by rejection on the cone samples.

    Args:
        support: [E, S, D] support features.
        labels: [E, S] labels.
        n_way: classes.
        distribution, scale, bias, loss_threshold, loss, band: the guess & check head's settings.
        settings: multilevel splitting settings.
        generator: seeds the episodes' random streams.
        nngp: the prior of an infinitely wide ReLU network instead (`distribution: nngp`; raw loss
            only): the accepted head is then a posterior draw of that GP, `NNGPPosterior`.
    """
    device, dtype = support.device, support.dtype
    support, labels = support.cpu(), labels.cpu().long()         # the sampler runs on the CPU
    episodes, _, dim = support.shape
    seeds = torch.randint(0, 2 ** 62, (episodes, settings.repeats + 1), generator=generator,
                          device=generator.device).cpu().tolist()
    s, s_b = prior_scales(distribution, scale, bias)
    prior = LogitPrior.from_features(support, scale=s, bias_scale=s_b) if nngp is None else \
        LogitPrior.from_kernel(nngp_kernel(support, nngp))
    normalized = loss != "raw"
    low, high = (band if band is not None else [0.0, loss_threshold if loss_threshold is not None else math.inf])
    best = attainable(support, labels, n_way) if normalized else None
    empty = best.lower >= high if normalized else torch.zeros(episodes, dtype=torch.bool)
    if bool(empty.all()):
        raise fail(f"The loss band's upper edge {high:g} is below the lowest attainable {loss} loss of every "
                   f"episode (at least {float(best.lower.min()):.4f}): no head has a loss in it.",
                   f"Raise the band's upper edge above {float(best.value.max()):.4f}, or drop the band.")
    run = (~empty).nonzero().squeeze(1)
    own = Streams([row[-1] for row in seeds])                      # per episode: pick a chain, then theta0
    repeats, chains = settings.repeats, settings.chains
    run_log10 = torch.full((episodes, repeats), -math.inf, dtype=torch.float64)
    stalled, tied = torch.zeros(episodes, dtype=torch.bool), torch.zeros(episodes, dtype=torch.bool)
    levels = torch.zeros(episodes, dtype=torch.float64)
    samples = torch.zeros(episodes, repeats * chains, *labels.shape[1:], n_way, dtype=torch.float64)
    allowed = torch.zeros(episodes, repeats * chains, dtype=torch.bool)
    extra = torch.zeros(episodes, repeats * chains, n_way, 2, dtype=torch.float64)
    losses = torch.full((episodes, repeats * chains), math.inf, dtype=torch.float64)
    if run.numel():
        sub_prior = prior.take(run)
        level = None
        if normalized:
            level = normalized_level(loss, support[run], labels[run], n_way, sub_prior,
                                     torch.full((run.numel(),), float(high)))
        result = split_volume(sub_prior, Constraints.beat_all(labels[run], n_way, sub_prior), n_way,
                              Streams([seed for e in run.tolist() for seed in seeds[e][:-1]]), settings, level=level)
        flat = result.samples.flatten(1, 2)                            # [E', R * C, S, N]: all draws of the region
        inside = result.inside.flatten(1)
        state = None if result.extra is None else result.extra.flatten(1, 2)
        value = sample_losses(level, flat, state, n_way) if normalized else linear_loss(flat, labels[run].unsqueeze(1))
        keep = inside & (value > low) if normalized else inside.clone()
        if loss_threshold is not None and not normalized:
            keep &= value < loss_threshold
        # The lower edge (or a raw threshold) by rejection on each run's final chains.
        kept = keep.view(-1, repeats, chains).double().sum(-1) / inside.view(-1, repeats, chains).double().sum(-1).clamp_min(1)
        run_log10[run] = result.run_log10 + kept.log10()
        stalled[run], tied[run], levels[run] = result.stalled, result.tied, result.levels.double().mean(1)
        samples[run], allowed[run], losses[run] = flat, keep, value.masked_fill(~inside, math.inf)
        if state is not None:
            extra[run] = state
    log10, se = combine_runs(run_log10)
    failed = ~allowed.any(dim=1) | ~torch.isfinite(log10)
    # Uniform among allowed chains (all chains of all repeats are draws from the region); a failed
    # episode gets its lowest-loss chain inside the region, or the zero head if it has none.
    rank = own.rand(()) * allowed.sum(1).clamp_min(1)
    order = allowed.double().argsort(dim=1, descending=True, stable=True)
    pick = order.gather(1, rank.long().unsqueeze(1)).squeeze(1)
    pick = torch.where(failed, losses.argmin(dim=1), pick)
    logits = samples[torch.arange(episodes), pick]
    if nngp is not None:
        logits[failed & ~torch.isfinite(losses.gather(1, pick.unsqueeze(1)).squeeze(1))] = 0.0
        posterior = NNGPPosterior(nngp, support.double(), logits, (own.rand(()) * 2 ** 52).long().tolist())
        weight, bias_values = torch.zeros(episodes, dim, n_way, dtype=torch.float64), torch.zeros(episodes, n_way,
                                                                                                   dtype=torch.float64)
    elif loss == "full_norm":
        weight, bias_values = WeightNorm.from_prior(prior, dim).weights(support, logits, extra[torch.arange(episodes), pick], own)
    else:
        weight, bias_values = weights_given_logits(support, logits, prior, own)
    nothing = failed & ~torch.isfinite(losses.gather(1, pick.unsqueeze(1)).squeeze(1))
    weight[nothing], bias_values[nothing] = 0.0, 0.0
    chosen = losses.gather(1, pick.unsqueeze(1)).squeeze(1)
    stats = {"log10_volume": log10, "log10_volume_se": se, "levels": levels, "failed": failed.double(),
             "stalled": stalled.double(), "tied": tied.double(), "band_empty": empty.double(),
             "support_loss": torch.where(torch.isfinite(chosen), chosen, torch.full_like(chosen, math.nan)),
             "clt_approximation": torch.full((episodes,), float(distribution == "uniform"))}
    if best is not None:
        stats["min_loss"], stats["min_loss_lower"] = best.value, best.lower
    return HeadFit(weight.to(device, dtype), bias_values.to(device, dtype),
                   stats={key: value.to(device) for key, value in stats.items()},
                   model=posterior if nngp is not None else None)


class NNGPPosterior(Predictor):
    """The accepted head of guess & check under the NNGP prior: a draw of the GP given its support logits.

    `predict` draws the logits of the given points from the GP conditioned on the support logits
    (Matheron's rule on the joint prior of support and those points), from each episode's own
    stream: the same features give the same logits, and the draw is exact in distribution.
    (`weight` and `bias` of its fit are 0: no finite weights stand behind an infinitely wide head.)

    Args:
        settings: the NNGP kernel; support: [E, S, D]; logits: [E, S, N] the accepted support logits;
        seeds: one stream seed per episode.
    """

    def __init__(self, settings: NNGPSettings, support: torch.Tensor, logits: torch.Tensor, seeds: list[int]):
        self.settings, self.support, self.logits, self.seeds = settings, support, logits, seeds

    def predict(self, fit: HeadFit, features: torch.Tensor) -> torch.Tensor:
        device, dtype = features.device, features.dtype
        joint = LogitPrior.from_kernel(nngp_kernel(torch.cat([self.support, features.cpu().double()], 1), self.settings))
        noise = Streams(self.seeds).randn((1, joint.factor.shape[1], self.logits.shape[-1]))
        return draw_given_first(joint, self.logits.unsqueeze(1), noise).squeeze(1).to(device, dtype)


def exact_settings(head: Any) -> SplittingSettings:
    """The splitting settings of a `guess_check` head's `exact` field (a clear error if invalid)."""
    where = f"heads.{head.name or 'guess_check'}.exact"
    settings = build_dataclass(SplittingSettings, head.config.exact, where)
    settings.check(where)
    return settings


def fit_exact_head(head: Any, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
                   generator: torch.Generator) -> HeadFit:
    """`fit_exact` with a `guess_check` head's settings."""
    c = head.config
    return fit_exact(support, labels, n_way, distribution=c.distribution, scale=c.scale, bias=c.bias,
                     loss_threshold=c.loss_threshold, settings=exact_settings(head), generator=generator,
                     loss=c.loss, band=c.band, nngp=nngp_settings(head) if c.distribution == "nngp" else None)


def nngp_settings(head: Any) -> NNGPSettings:
    """The NNGP settings of a `guess_check` head's `nngp` field (a clear error if invalid)."""
    where = f"heads.{head.name or 'guess_check'}.nngp"
    settings = build_dataclass(NNGPSettings, head.config.nngp, where)
    settings.check(where)
    return settings
