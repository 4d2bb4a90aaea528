"""The volume analysis of a run: what the fitting region of each episode looks like, by volume.

Per analysed episode, under the configured prior (`VolumeConfig`), with P = support + query
points and every estimate carrying its Monte Carlo error (from independent repeats):
- `log10_volume`: log10 P(a random head fits the support set);
- `expected_accuracy`: E[query accuracy | fits the support], the volume-weighted accuracy of all
  fitting heads (guess & check's expected accuracy), its quantiles, and for each head of the
  run the percentile of its query accuracy within that distribution (mid-rank: ties count half);
- `log10_volume_good` / `log10_volume_poisoned`: log10 P(fits the support AND classifies every
  query correctly), vs. every query as the fixed wrong label (y + 1) mod N.
Every episode has its own random streams, seeded from (seed, setting, episode, part, repeat),
so the numbers do not depend on chunking, sub-batching or the number of processes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch

from episodes import Episodes
from fewshot.config import FeaturesConfig
from fewshot.run.evaluate import CHUNK_SIZE, episode_tensors
from fewshot.results.document import HeadResult
from fewshot.results.stats import summarize
from fewshot.volume.config import VolumeConfig
from fewshot.volume.gaussian import LogitPrior
from fewshot.volume.lin_ess import Constraints
from fewshot.volume.splitting import split_volume
from fewshot.volume.streams import Streams, stream_seed

__all__ = ["analyze_episodes", "analyze_in_batches", "analyze_volume"]
SUB_BATCH = 25  # episodes sampled together (memory and cache only: results do not depend on it)
SCHEMA = "fewshot.volume/1"


def _streams(seed: int, setting: str, episodes: Sequence[int], part: str, repeats: int) -> Streams:
    return Streams([stream_seed(seed, setting, episode, part, repeat) for episode in episodes
                    for repeat in range(repeats)])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def analyze_episodes(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                     n_way: int, ids: Sequence[int], config: VolumeConfig, *, seed: int,
                     setting: str) -> dict[str, torch.Tensor]:
    """Per-episode volume estimates of a batch of episodes (all tensors [E, ...], on the CPU).

    Args:
        support, labels, query, query_labels: the episodes' preprocessed features and labels.
        n_way: classes.
        ids: global episode numbers (they name the random streams).
        config: prior and splitting settings.
        seed, setting: run seed and setting name (also name the streams).
    """
    config.check("volume")
    episodes, shots = labels.shape
    s, s_b = config.gaussian_scales()
    prior = LogitPrior.from_features(torch.cat([support, query], 1), scale=s, bias_scale=s_b)
    support_prior = LogitPrior.from_features(support, scale=s, bias_scale=s_b)
    labels, query_labels = labels.cpu().long(), query_labels.cpu().long()
    fits = Constraints.beat_all(labels, n_way, support_prior)
    settings, repeats = config.splitting(), config.repeats
    fit = split_volume(support_prior, fits, n_way, _streams(seed, setting, ids, "fit", repeats), settings)
    query_logits = query_given_support(prior, fit.samples.flatten(1, 2), shots,
                                       _streams(seed, setting, ids, "query", 1))
    correct = (query_logits.argmax(-1) == query_labels[:, None]).double().mean(-1).view(episodes, repeats, -1)
    run_means = correct.mean(2)
    out = {"log10_volume": fit.log10, "log10_volume_se": fit.se, "levels": fit.levels.double().mean(1),
           "expected_accuracy": run_means.mean(1),
           "expected_accuracy_se": run_means.std(1, unbiased=True) / math.sqrt(repeats),
           "chain_accuracy": correct.flatten(1), "stalled": fit.stalled.double()}
    if config.poisoned:
        # Episodes past `poisoned_episodes` get NaN (not measured); the streams are per episode, so
        # the measured ones are the same numbers whichever others share their batch.
        keep = [i for i, episode in enumerate(ids) if not config.poisoned_episodes or episode < config.poisoned_episodes]
        for name in ("good", "poisoned"):
            out[f"log10_volume_{name}"] = torch.full((episodes,), math.nan, dtype=torch.float64)
            out[f"log10_volume_{name}_se"] = torch.full((episodes,), math.nan, dtype=torch.float64)
        if keep:
            rows = torch.tensor(keep)
            parts = _good_and_poisoned(prior.take(rows), labels[rows], query_labels[rows], n_way,
                                       [ids[i] for i in keep], config, seed=seed, setting=setting)
            for name, (log10, se, stalled) in parts.items():
                out[f"log10_volume_{name}"][rows], out[f"log10_volume_{name}_se"][rows] = log10, se
                out["stalled"][rows] += stalled
    return out


def _good_and_poisoned(prior: LogitPrior, labels: torch.Tensor, query_labels: torch.Tensor, n_way: int,
                       ids: Sequence[int], config: VolumeConfig, *, seed: int,
                       setting: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(log10 volume, its se, stalled) [E] of the heads that fit the support AND classify every query
    correctly ("good") or as the wrong label (y + 1) mod N ("poisoned"); `prior` is over support and
    query points, the other arguments as `analyze_episodes`."""
    parts = {}
    for part, target in (("good", query_labels), ("poisoned", (query_labels + 1) % n_way)):
        both = Constraints.beat_all(torch.cat([labels, target], 1), n_way, prior)
        result = split_volume(prior, both, n_way, _streams(seed, setting, ids, part, config.repeats), config.splitting())
        parts[part] = (result.log10, result.se, result.stalled.double())
    return parts


def analyze_in_batches(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                       n_way: int, ids: Sequence[int], config: VolumeConfig, *, seed: int,
                       setting: str) -> dict[str, torch.Tensor]:
    """`analyze_episodes` of the first len(ids) episodes, SUB_BATCH at a time (the tensors stay in cache: a
    batch of 600 is 1.25x slower); the numbers do not depend on the batching."""
    parts = []
    for start in range(0, len(ids), SUB_BATCH):
        rows = slice(start, min(len(ids), start + SUB_BATCH))
        parts.append(analyze_episodes(support[rows], labels[rows], query[rows], query_labels[rows], n_way, ids[rows],
                                      config, seed=seed, setting=setting))
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def query_given_support(prior: LogitPrior, support_logits: torch.Tensor, shots: int, streams: Streams) -> torch.Tensor:
    """Query logits [E, C, Q, N] drawn from the Gaussian conditional given support logits [E, C, S, N].

    Matheron's rule on the joint prior of support and query logits: z_q = z0_q + K_qs K_ss^+ (z_s - z0_s)
    with z0 a fresh joint prior draw.
    """
    episodes, chains, _, n_way = support_logits.shape
    joint = prior.sample(streams.randn((chains, prior.factor.shape[1], n_way)))
    gram = prior.factor @ prior.factor.transpose(1, 2)
    support_gram = gram[:, :shots, :shots]
    gain = gram[:, shots:, :shots] @ torch.linalg.pinv(support_gram, hermitian=True)      # [E, Q, S]
    return joint[:, :, shots:] + torch.einsum("eqs,ecsn->ecqn", gain, support_logits - joint[:, :, :shots])


def _percentile(chain_accuracy: torch.Tensor, accuracy: torch.Tensor) -> torch.Tensor:
    """Mid-rank percentile [E] of each episode's head accuracy among its chains' accuracies."""
    below = (chain_accuracy < accuracy.unsqueeze(1) - 1e-9).double().mean(1)
    equal = ((chain_accuracy - accuracy.unsqueeze(1)).abs() <= 1e-9).double().mean(1)
    return 100 * (below + equal / 2)


def analyze_volume(features: torch.Tensor, episodes: Episodes, heads: Sequence[HeadResult], settings: FeaturesConfig,
                   config: VolumeConfig, *, seed: int, device: str = "cpu", rank: int = 0, world_size: int = 1,
                   gather: Callable[[Any], list[Any]] | None = None) -> dict[str, Any]:
    """The `volume` section of a results document for one episode setting.

    Args:
        features: [N, D] raw features of the split; episodes: the setting's episodes.
        heads: the run's head results (their per-episode accuracies get percentiles).
        settings: feature pre-processing (as for the heads).
        config: the volume settings.
        seed: the run's episode seed.
        rank, world_size, gather: as in `fewshot.run.evaluate.evaluate_heads`.
    """
    config.check("volume")
    count = len(episodes) if config.episodes <= 0 else min(config.episodes, len(episodes))
    setting = f"{episodes.n_way}way-{episodes.k_shot}shot"
    chunks = range((count + CHUNK_SIZE - 1) // CHUNK_SIZE)
    mine = {}
    for chunk in chunks[rank::world_size]:
        support, labels, query, query_labels = (t.cpu() for t in episode_tensors(features, episodes, chunk, settings, device))
        ids = list(range(chunk * CHUNK_SIZE, min(count, (chunk + 1) * CHUNK_SIZE)))
        mine[chunk] = analyze_in_batches(support, labels, query, query_labels, episodes.n_way, ids, config,
                                         seed=seed, setting=setting)
    if world_size > 1:
        mine = {chunk: part for parts in gather(mine) for chunk, part in parts.items()}
    values = {key: torch.cat([mine[chunk][key] for chunk in chunks]) for key in mine[chunks[0]]}
    return summarize_volume(values, heads, config, seed=seed, count=count, queries=episodes.n_way * episodes.n_query)


def _estimate(values: torch.Tensor, errors: torch.Tensor) -> dict[str, Any]:
    """Mean over episodes ± CI95 over episodes, the Monte Carlo error of that mean, per-episode values."""
    finite = values[torch.isfinite(values)]
    summary = summarize(finite) if finite.numel() else {"mean": None, "std": None, "ci95": None, "n": 0}
    mc = float(errors[torch.isfinite(values)].pow(2).sum().sqrt() / max(1, finite.numel()))
    # -inf is a measured empty region (contradictory duplicates); NaN an episode not measured.
    return {**summary, "mc_se": mc, "n_infinite": int(values.isinf().sum()),
            "per_episode": [_finite(round(v, 6)) for v in values.tolist()],
            "per_episode_se": [_finite(round(v, 6)) for v in errors.tolist()]}


def summarize_volume(values: dict[str, torch.Tensor], heads: Sequence[HeadResult], config: VolumeConfig, *,
                     seed: int, count: int, queries: int) -> dict[str, Any]:
    """The results-file section from per-episode values (see `analyze_episodes`)."""
    chains = values["chain_accuracy"]
    doc: dict[str, Any] = {
        "schema": SCHEMA, "config": dataclasses.asdict(config), "seed": seed, "episodes": count,
        "prior": {"distribution": config.prior, "scale": config.scale, "bias_scale": config.bias_scale,
                  "approximation": ("CLT approximation: the uniform prior run as the Gaussian with the same "
                                    "variance (scale^2 / 3)") if config.prior == "uniform" else None},
        "streams": "per (seed, setting, episode, part, repeat); parts fit, good, poisoned",
        "error": f"se from {config.repeats} independent splitting runs per episode (delta method on log10 of "
                 "their mean, or the runs' log10 spread / sqrt(repeats) if larger); mc_se = Monte Carlo error of "
                 "the mean over episodes; ci95 = over episodes",
        "estimator": "generalized adaptive multilevel splitting (Brehier, Lelievre & Rousset 2016), LIN-ESS moves "
                     "of class columns (blocks of block_size points given the rest), float32 chains",
        "levels_mean": float(values["levels"].mean()),
        "stalled_episodes": int((values["stalled"] > 0).sum()),
        "log10_volume": _estimate(values["log10_volume"], values["log10_volume_se"]),
        "expected_accuracy": _estimate(values["expected_accuracy"], values["expected_accuracy_se"]),
    }
    levels = torch.tensor(config.quantiles, dtype=torch.float64)
    doc["accuracy_quantiles"] = {"q": config.quantiles,
                                 "mean_over_episodes": [round(v, 6) for v in chains.quantile(levels, dim=1).mean(1).tolist()],
                                 "per_episode": [[round(v, 6) for v in row] for row in chains.quantile(levels, dim=1).T.tolist()]}
    # The mixture over episodes of each episode's accuracy distribution, on the grid k / queries.
    grid = torch.round(chains * queries).long().clamp(0, queries)
    mass = torch.zeros(queries + 1, dtype=torch.float64).scatter_add_(0, grid.flatten(), torch.ones(grid.numel(), dtype=torch.float64))
    doc["accuracy_distribution"] = {"accuracy": [k / queries for k in range(queries + 1)],
                                    "mass": [round(v, 8) for v in (mass / mass.sum()).tolist()]}
    doc["heads"] = {}
    for head in heads:
        accuracy = head.per_episode[: chains.shape[0]].double()
        percentile = _percentile(chains, accuracy)
        doc["heads"][head.name] = {"accuracy_mean": float(accuracy.mean()), "percentile": summarize(percentile),
                                   "per_episode_percentile": [round(v, 4) for v in percentile.tolist()]}
    if "log10_volume_good" in values:
        good, poisoned = values["log10_volume_good"], values["log10_volume_poisoned"]
        doc["log10_volume_good"] = _estimate(good, values["log10_volume_good_se"])
        doc["log10_volume_poisoned"] = _estimate(poisoned, values["log10_volume_poisoned_se"])
        doc["log10_good_over_poisoned"] = _estimate(good - poisoned, (values["log10_volume_good_se"] ** 2 +
                                                                      values["log10_volume_poisoned_se"] ** 2).sqrt())
    return doc
