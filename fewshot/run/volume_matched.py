"""Guess & check at each head's own loss: the matched comparison of the volume analysis (issue 17).

For a head with normalized support loss h on an episode (`span_norm_loss` or `full_norm_loss`,
per `volume.matched_loss`: a diagnostic of the run), the region "the head fits the support set
AND its normalized loss is at most h" is reached by one composite splitting run
(`split_volume(..., level=normalized_level(...))`). Per head and episode it gives log10 P(region) with its error, the volume-weighted query accuracy of
the heads in it (guess & check at the head's loss) with its error from the independent repeats,
and the chains' accuracies (for the head's percentile within that matched distribution).

With `full_norm` the region also conditions the weights' part outside the support features' span
(the chains carry it, `WeightNorm`), and the query logits depend on that part: each chain's head
is built from its state (`WeightNorm.weights`, the out-of-span direction drawn uniformly from its
own stream) and the query logits are that head's. With `span_norm` the out-of-span part is the
prior's, so the query logits are drawn from the Gaussian conditional given the support logits.

An h at or below the episode's certified lowest attainable loss (`fewshot.volume.attainable`)
is an empty region: log10 P = -inf, accuracy not defined (NaN), not run. A head without the
diagnostic (a network head) or an episode past `matched_episodes` is not measured (NaN).
Every (episode, head) has its own streams, seeded from (seed, setting, episode, "matched/<head>",
repeat), so the numbers depend neither on the batching nor on the other heads.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from fewshot.heads.guess_check_exact import attainable, normalized_level
from fewshot.volume.config import VolumeConfig
from fewshot.volume.gaussian import LogitPrior, draw_given_first
from fewshot.volume.lin_ess import Constraints
from fewshot.volume.loss_level import WeightNorm
from fewshot.volume.splitting import split_volume
from fewshot.volume.streams import Streams, stream_seed

__all__ = ["MATCHED_KEYS", "analyze_matched", "matched_key"]
# Per head, each [E] except chain_accuracy [E, repeats * chains].
MATCHED_KEYS = ("loss", "log10_volume", "log10_volume_se", "expected_accuracy", "expected_accuracy_se",
                "chain_accuracy", "stalled", "tied", "empty")


def matched_key(head: str, key: str) -> str:
    """The flat key of a head's matched value among the analysis' per-episode tensors."""
    return f"matched/{head}/{key}"


def _streams(seed: int, setting: str, episodes: Sequence[int], part: str, repeats: int) -> Streams:
    return Streams([stream_seed(seed, setting, episode, part, repeat) for episode in episodes
                    for repeat in range(repeats)])


def analyze_matched(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                    n_way: int, ids: Sequence[int], config: VolumeConfig, losses: dict[str, torch.Tensor], *,
                    seed: int, setting: str) -> dict[str, torch.Tensor]:
    """Per-episode matched values of each head, under `matched_key(head, key)` (see the module doc).

    Args:
        support, labels, query, query_labels: the episodes' preprocessed features and labels (CPU).
        n_way: classes.
        ids: global episode numbers (they name the streams and select the first `matched_episodes`).
        config: the volume settings (`matched_loss` names the loss).
        losses: per head, its normalized support loss [E] on these episodes (NaN: not measured).
        seed, setting: run seed and setting name.
    """
    episodes, shots = labels.shape
    labels, query_labels = labels.long(), query_labels.long()
    prior = config.logit_prior(torch.cat([support, query], 1))
    support_prior = config.logit_prior(support)
    fits = Constraints.beat_all(labels, n_way, support_prior)
    lowest = attainable(support, labels, n_way).lower
    limit = config.matched_episodes or math.inf
    wanted = torch.tensor([episode < limit for episode in ids], dtype=torch.bool)
    out = {}
    for head, loss in losses.items():
        loss = loss.double().cpu()
        values = {key: torch.full((episodes,), math.nan, dtype=torch.float64) for key in MATCHED_KEYS}
        values["chain_accuracy"] = torch.full((episodes, config.repeats * config.chains), math.nan, dtype=torch.float64)
        values["loss"] = torch.where(wanted, loss, math.nan)
        measured = wanted & torch.isfinite(loss)
        empty = measured & (loss <= lowest)
        values["empty"] = torch.where(measured, empty.double(), math.nan)
        values["log10_volume"][empty], values["log10_volume_se"][empty] = -math.inf, 0.0
        values["stalled"][measured], values["tied"][measured] = 0.0, 0.0
        rows = (measured & ~empty).nonzero().squeeze(1)
        if rows.numel():
            _run(values, rows, support, query, prior, support_prior, fits, labels, query_labels, loss, n_way, ids,
                 config, seed=seed, setting=setting, part=f"matched/{head}")
        out.update({matched_key(head, key): value for key, value in values.items()})
    return out


def _run(values: dict[str, torch.Tensor], rows: torch.Tensor, support: torch.Tensor, query: torch.Tensor,
         prior: LogitPrior, support_prior: LogitPrior,
         fits: Constraints, labels: torch.Tensor, query_labels: torch.Tensor, loss: torch.Tensor, n_way: int,
         ids: Sequence[int], config: VolumeConfig, *, seed: int, setting: str, part: str) -> None:
    """One composite splitting run for episodes `rows` of one head, written into `values` in place."""
    repeats = config.repeats
    names = [ids[i] for i in rows.tolist()]
    sub_prior = support_prior.take(rows)
    level = normalized_level(config.matched_loss, support[rows], labels[rows], n_way, sub_prior, loss[rows])
    result = split_volume(sub_prior, fits.take(rows), n_way, _streams(seed, setting, names, part, repeats),
                          config.splitting(), level=level)
    samples = result.samples.flatten(1, 2)                                      # [E', R * C, S, N]
    if level.extra is None:
        streams = _streams(seed, setting, names, part + "/query", 1)
        noise = streams.randn((samples.shape[1], prior.factor.shape[1], n_way))
        query_logits = draw_given_first(prior.take(rows), samples, noise)
    else:
        query_logits = _full_norm_query_logits(level.extra, support[rows], query[rows], samples,
                                               result.extra.flatten(1, 2), names, seed=seed, setting=setting,
                                               part=part + "/weights")
    correct = (query_logits.argmax(-1) == query_labels[rows, None]).double().mean(-1)
    # Only chains inside the region are draws of it (a stalled run hands back others): NaN elsewhere.
    correct = correct.masked_fill(~result.inside.flatten(1), math.nan)
    run_means = correct.view(rows.numel(), repeats, -1).nanmean(2)               # NaN: a run with no chain inside
    counted = torch.isfinite(run_means).sum(1)
    mean = run_means.nanmean(1)
    spread = torch.where(torch.isfinite(run_means), (run_means - mean[:, None]) ** 2, 0.0).sum(1)
    se = torch.where(counted >= 2, (spread / (counted - 1).clamp_min(1)).sqrt() / counted.clamp_min(1).sqrt(), math.nan)
    values["log10_volume"][rows], values["log10_volume_se"][rows] = result.log10, result.se
    values["expected_accuracy"][rows], values["expected_accuracy_se"][rows] = mean, se
    values["chain_accuracy"][rows] = correct
    values["stalled"][rows], values["tied"][rows] = result.stalled.double(), result.tied.double()



def _full_norm_query_logits(norm: WeightNorm, support: torch.Tensor, query: torch.Tensor, samples: torch.Tensor,
                            extra: torch.Tensor, names: Sequence[int], *, seed: int, setting: str,
                            part: str) -> torch.Tensor:
    """Query logits [E', K, Q, N] of the heads behind K chains per episode under `full_norm`.

    Args:
        norm: the level's `WeightNorm` of these episodes (their support prior).
        support, query: [E', S, D], [E', Q, D] features.
        samples, extra: the chains' support logits [E', K, S, N] and out-of-span state [E', K, N, 2].
        names: global episode numbers; seed, setting, part: name each chain's stream (one per chain).
    """
    chains = samples.shape[1]
    out = []
    for i, episode in enumerate(names):      # one episode at a time: K heads of D x N weights each
        fields = {key: getattr(norm, key) for key in ("kinv", "bias_axis", "q", "beta_dims", "rho_dof")}
        one = dataclasses.replace(norm, **{key: value[i:i + 1].expand(chains, *value.shape[1:])
                                           for key, value in fields.items()})
        streams = Streams([stream_seed(seed, setting, episode, part, chain) for chain in range(chains)])
        weight, bias = one.weights(support[i].double().expand(chains, -1, -1), samples[i].double(),
                                   extra[i].double(), streams)
        out.append(query[i].double() @ weight + bias.unsqueeze(1))
    return torch.stack(out)
