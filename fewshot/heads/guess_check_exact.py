"""Guess & check made exact: the head it would accept with an unlimited budget, and the volume.

Guess & check draws heads from the prior until one fits the support set, so its accepted head
is the prior restricted to the fitting cone. Only the support logits decide acceptance, and
they are Gaussian (`LogitPrior`), so: sample support logits z in the cone with multilevel
splitting + LIN-ESS (`split_volume`, which also gives log10 P(fit)), pick one chain per episode,
then draw the weights given those logits from the Gaussian conditional (Matheron's rule):
theta = theta0 + Sigma X^T K^+ (z - X theta0) with theta0 ~ prior, X the support features with
a ones column and Sigma the prior covariance. The part of the weight outside the features' span
is theta0's, i.e. the prior's; the head reproduces z exactly on the support.

A support-loss threshold is a nonlinear condition: it is applied as one more level by
rejection on the cone samples (the fraction of chains below the threshold multiplies the
volume, and the head is drawn among them); an episode where no chain gets below it is
`failed` and gets its lowest-loss chain, as with rejection.

A uniform prior U[-a, a] is run as the Gaussian with s^2 = a^2 / 3 (the logits are sums of many
independent terms): a CLT approximation, reported as such in the stats (`clt_approximation`).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from fewshot.heads.base import HeadFit
from fewshot.heads.common import linear_loss
from fewshot.typed import build_dataclass
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.lin_ess import Constraints
from fewshot.volume.splitting import SplittingSettings, combine_runs, split_volume
from fewshot.volume.streams import Streams

__all__ = ["prior_scales", "fit_exact", "weights_given_logits"]


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


def fit_exact(support: torch.Tensor, labels: torch.Tensor, n_way: int, *, distribution: str, scale: float,
              bias: bool, loss_threshold: float | None, settings: SplittingSettings,
              generator: torch.Generator) -> HeadFit:
    """One exactly distributed accepted guess & check head per episode, and log10 P(fit).

    Args:
        support: [E, S, D] support features.
        labels: [E, S] labels.
        n_way: classes.
        distribution, scale, bias, loss_threshold: the guess & check head's settings.
        settings: multilevel splitting settings.
        generator: seeds the episodes' random streams.
    """
    device, dtype = support.device, support.dtype
    support, labels = support.cpu(), labels.cpu().long()         # the sampler runs on the CPU
    episodes, shots, _ = support.shape
    seeds = torch.randint(0, 2 ** 62, (episodes, settings.repeats + 1), generator=generator,
                          device=generator.device).cpu().tolist()
    s, s_b = prior_scales(distribution, scale, bias)
    prior = LogitPrior.from_features(support, scale=s, bias_scale=s_b)
    constraints = Constraints.beat_all(labels, n_way, prior)
    result = split_volume(prior, constraints, n_way, Streams([seed for row in seeds for seed in row[:-1]]), settings)
    own = Streams([row[-1] for row in seeds])                      # per episode: pick a chain, then theta0
    chains = result.samples.flatten(1, 2)                          # [E, R * C, S, N]
    loss = linear_loss(chains, labels.unsqueeze(1))                # [E, R * C]
    allowed = torch.ones_like(loss, dtype=torch.bool)
    run_log10 = result.run_log10
    if loss_threshold is not None:
        allowed = loss < loss_threshold
        below = allowed.view(result.run_log10.shape + (-1,)).double().mean(-1)
        run_log10 = run_log10 + below.log10()
    log10, se = combine_runs(run_log10)
    failed = ~allowed.any(dim=1) | ~torch.isfinite(result.log10)
    # Uniform among allowed chains (all chains of all repeats are draws from the cone).
    rank = own.rand(()) * allowed.sum(1).clamp_min(1)
    order = allowed.double().argsort(dim=1, descending=True, stable=True)
    pick = order.gather(1, rank.long().unsqueeze(1)).squeeze(1)
    pick = torch.where(failed, loss.argmin(dim=1), pick)
    logits = chains[torch.arange(episodes), pick]
    weight, bias_values = weights_given_logits(support, logits, prior, own)
    stats = {"log10_volume": log10, "log10_volume_se": se, "levels": result.levels.double().mean(1),
             "failed": failed.double(), "stalled": result.stalled.double(), "support_loss": loss.gather(1, pick.unsqueeze(1)).squeeze(1),
             "clt_approximation": torch.full((episodes,), float(distribution == "uniform"))}
    return HeadFit(weight.to(device, dtype), bias_values.to(device, dtype),
                   stats={key: value.to(device) for key, value in stats.items()})


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
                     loss_threshold=c.loss_threshold, settings=exact_settings(head), generator=generator)
