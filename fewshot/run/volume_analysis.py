"""The volume analysis of a run: what the fitting region of each episode looks like, by volume.

Per analysed episode, under the configured prior (`VolumeConfig`), with P = support + query
points and every estimate carrying its Monte Carlo error (from independent repeats):
- `log10_volume`: log10 P(a random head fits the support set);
- `expected_accuracy`: E[query accuracy | fits the support], the volume-weighted accuracy of all
  fitting heads (guess & check's expected accuracy), its quantiles, and for each head of the
  run the percentile of its query accuracy within that distribution (mid-rank: ties count half);
- `log10_volume_good` / `log10_volume_poisoned`: log10 P(fits the support AND classifies every
  query correctly), vs. every query as the fixed wrong label (y + 1) mod N;
- with `matched_loss`, per head `heads.<name>.matched`: the same at the head's own normalized loss
  (fits AND loss <= the head's; `fewshot.run.volume_matched`): log10 P of that region, the
  expected accuracy of its heads, and the head's percentile among them.
With `model: mlp` the same estimates come from a finite-width ReLU head sampled in weight space
(`fewshot.volume.weight_space`). Every episode has its own random streams, seeded from (seed, setting, episode, part, repeat),
and is analysed in a fixed sub-batch (`SUB_BATCH` per chunk), so the numbers do not depend on the number of processes. Other
sub-batches could move an estimate within its error: a batched eigendecomposition rounds a prior's last bit by
its place in the batch (25 demo 5-shot episodes alone vs in a batch of 50: one estimate of the 25 changed).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch

from episodes import Episodes
from fewshot.config import FeaturesConfig
from fewshot.run.evaluate import CHUNK_SIZE, episode_tensors
from fewshot.run.volume_matched import analyze_matched, matched_key
from fewshot.results.document import HeadResult
from fewshot.results.stats import summarize
from fewshot.volume.config import VolumeConfig
from fewshot.volume.gaussian import LogitPrior, draw_given_first
from fewshot.volume.lin_ess import Constraints
from fewshot.volume.splitting import SplitResult, split_volume
from fewshot.volume.streams import Streams, stream_seed
from fewshot.volume.weight_space import NetworkPrior, NetworkSplit, network_query_accuracy, split_network

__all__ = ["analyze_episodes", "analyze_in_batches", "analyze_volume"]
SUB_BATCH = 25  # episodes sampled together (changing it can change estimates within their errors)
SCHEMA = "fewshot.volume/1"


def _streams(seed: int, setting: str, episodes: Sequence[int], part: str | Sequence[str], repeats: int) -> Streams:
    """Episode-major streams of one part (or of several parts, one after the other)."""
    parts = [part] if isinstance(part, str) else part
    return Streams([stream_seed(seed, setting, episode, name, repeat) for name in parts for episode in episodes
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
    if config.model == "mlp":
        return _analyze_network(support, labels, query, query_labels, n_way, ids, config, seed=seed, setting=setting)
    episodes, shots = labels.shape
    prior = config.logit_prior(torch.cat([support, query], 1))        # linear Gaussian or NNGP (`prior`)
    support_prior = config.logit_prior(support)
    labels, query_labels = labels.cpu().long(), query_labels.cpu().long()
    fits = Constraints.beat_all(labels, n_way, support_prior)
    settings, repeats = config.splitting(), config.repeats
    fit = split_volume(support_prior, fits, n_way, _streams(seed, setting, ids, "fit", repeats), settings)
    query_logits = query_given_support(prior, fit.samples.flatten(1, 2), shots,
                                       _streams(seed, setting, ids, "query", 1))
    correct = (query_logits.argmax(-1) == query_labels[:, None]).double().mean(-1).view(episodes, repeats, -1)
    # A run stopped at max_levels hands back some chains outside the cone: they count nowhere (NaN).
    correct = correct.masked_fill(~fit.inside, math.nan)
    out = _fit_estimates(fit, correct, repeats)
    if config.poisoned:
        _add_good_and_poisoned(out, prior, labels, query_labels, n_way, ids, config, seed=seed, setting=setting)
    return out


def _add_good_and_poisoned(out: dict[str, torch.Tensor], prior: LogitPrior | NetworkPrior, labels: torch.Tensor,
                           query_labels: torch.Tensor, n_way: int, ids: Sequence[int], config: VolumeConfig, *,
                           seed: int, setting: str) -> None:
    """Add the good and poisoned volumes (and their stalls) to `out`; episodes past `poisoned_episodes`
    get NaN (not measured). The streams are per episode, so the measured ones are the same numbers
    whichever others share their batch."""
    episodes = labels.shape[0]
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


def _fit_estimates(fit: SplitResult | NetworkSplit, correct: torch.Tensor, repeats: int) -> dict[str, torch.Tensor]:
    """P(fit) and the volume-weighted query accuracy per episode from a splitting run `fit` (linear
    or network) and its chains' query accuracies `correct` [E, repeats, chains] (NaN: not counted)."""
    run_means = correct.nanmean(2)
    return {"log10_volume": fit.log10, "log10_volume_se": fit.se, "levels": fit.levels.double().mean(1),
            "expected_accuracy": run_means.mean(1),
            "expected_accuracy_se": run_means.std(1, unbiased=True) / math.sqrt(repeats),
            "chain_accuracy": correct.flatten(1), "stalled": fit.stalled.double(), "tied": fit.tied.double()}


def _analyze_network(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                     n_way: int, ids: Sequence[int], config: VolumeConfig, *, seed: int,
                     setting: str) -> dict[str, torch.Tensor]:
    """`analyze_episodes` for `model: mlp`: the same estimates, sampled in weight space (`split_network`)."""
    shots, repeats = labels.shape[1], config.repeats
    labels, query_labels = labels.cpu().long(), query_labels.cpu().long()
    net = config.network_prior(torch.cat([support, query], 1))
    support_net = net.first(shots)
    fit = split_network(support_net, support_net.constraints(labels, n_way), n_way,
                        _streams(seed, setting, ids, "fit", repeats), config.splitting())
    correct = network_query_accuracy(net, fit, shots, query_labels, _streams(seed, setting, ids, "query", 1))
    out = _fit_estimates(fit, correct, repeats)
    if config.poisoned:
        _add_good_and_poisoned(out, net, labels, query_labels, n_way, ids, config, seed=seed, setting=setting)
    return out


def _good_and_poisoned(prior: LogitPrior | NetworkPrior, labels: torch.Tensor, query_labels: torch.Tensor, n_way: int,
                       ids: Sequence[int], config: VolumeConfig, *, seed: int,
                       setting: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(log10 volume, its se, stalled) [E] of the heads that fit the support AND classify every query
    correctly ("good") or as the wrong label (y + 1) mod N ("poisoned"); `prior` is over support and
    query points (a logit prior, or a network's weight prior for `model: mlp`), the other arguments as
    `analyze_episodes`."""
    # One splitting run over both regions (2E problems, each on its own streams): the same numbers as
    # two runs, in the levels of the deeper region alone (the good region finishes early).
    episodes = labels.shape[0]
    twice = prior.take(torch.arange(episodes).repeat(2))
    targets = torch.cat([labels.repeat(2, 1), torch.cat([query_labels, (query_labels + 1) % n_way])], 1)
    streams = _streams(seed, setting, ids, ("good", "poisoned"), config.repeats)
    if isinstance(twice, NetworkPrior):
        result = split_network(twice, twice.constraints(targets, n_way), n_way, streams, config.splitting())
    else:
        result = split_volume(twice, Constraints.beat_all(targets, n_way, twice), n_way, streams, config.splitting())
    return {part: (result.log10[rows], result.se[rows], result.stalled[rows].double())
            for part, rows in (("good", slice(0, episodes)), ("poisoned", slice(episodes, None)))}


def analyze_in_batches(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                       n_way: int, ids: Sequence[int], config: VolumeConfig, *, seed: int,
                       setting: str) -> dict[str, torch.Tensor]:
    """`analyze_episodes` of the first len(ids) episodes, SUB_BATCH at a time (the tensors stay in cache: a
    batch of 600 is 1.25x slower); the sub-batches are fixed, so the numbers are too (see the module doc)."""
    parts = []
    for start in range(0, len(ids), SUB_BATCH):
        rows = slice(start, min(len(ids), start + SUB_BATCH))
        parts.append(analyze_episodes(support[rows], labels[rows], query[rows], query_labels[rows], n_way, ids[rows],
                                      config, seed=seed, setting=setting))
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def query_given_support(prior: LogitPrior, support_logits: torch.Tensor, shots: int, streams: Streams) -> torch.Tensor:
    """Query logits [E, C, Q, N] drawn from the Gaussian conditional given support logits [E, C, S, N].

    Matheron's rule on the joint prior of support and query logits (`draw_given_first`).
    """
    _, chains, _, n_way = support_logits.shape        # the first `shots` points of the prior are the support
    return draw_given_first(prior, support_logits, streams.randn((chains, prior.factor.shape[1], n_way)))


def head_percentile(chain_accuracy: torch.Tensor, accuracy: torch.Tensor) -> torch.Tensor:
    """Mid-rank percentile [E] of each episode's head accuracy among its chains' accuracies."""
    counted = (~chain_accuracy.isnan()).double().sum(1)
    below = (chain_accuracy < accuracy.unsqueeze(1) - 1e-9).double().sum(1) / counted
    equal = ((chain_accuracy - accuracy.unsqueeze(1)).abs() <= 1e-9).double().sum(1) / counted
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
        if config.matched_loss != "none":
            losses = {head.name: _head_losses(head, config.matched_loss, ids) for head in heads}
            for start in range(0, len(ids), SUB_BATCH):
                rows = slice(start, min(len(ids), start + SUB_BATCH))
                part = analyze_matched(support[rows], labels[rows], query[rows], query_labels[rows], episodes.n_way,
                                       ids[rows], config, {name: loss[rows] for name, loss in losses.items()},
                                       seed=seed, setting=setting)
                for key, value in part.items():
                    mine[chunk][key] = value if start == 0 else torch.cat([mine[chunk][key], value])
    if world_size > 1:
        mine = {chunk: part for parts in gather(mine) for chunk, part in parts.items()}
    values = {key: torch.cat([mine[chunk][key] for chunk in chunks]) for key in mine[chunks[0]]}
    return summarize_volume(values, heads, config, seed=seed, count=count, queries=episodes.n_way * episodes.n_query)


def _head_losses(head: HeadResult, kind: str, ids: Sequence[int]) -> torch.Tensor:
    """The head's normalized support loss [len(ids)] on episodes `ids` (NaN: a head without it, e.g. a network)."""
    loss = head.diagnostics.get(f"{kind}_loss")
    if loss is None:
        return torch.full((len(ids),), math.nan, dtype=torch.float64)
    return loss.double().cpu()[torch.tensor(list(ids), dtype=torch.long)]


def _matched(values: dict[str, torch.Tensor], head: str, accuracy: torch.Tensor, kind: str) -> dict[str, Any]:
    """The matched comparison of one head (`fewshot.run.volume_matched`), as stored."""
    get = lambda key: values[matched_key(head, key)]  # noqa: E731
    percentile = head_percentile(get("chain_accuracy"), accuracy)
    measured = torch.isfinite(get("loss"))
    return {"loss_kind": kind, "episodes": int(measured.sum()),
            "loss": _estimate(get("loss"), torch.zeros_like(get("loss"))),
            "log10_volume": _estimate(get("log10_volume"), get("log10_volume_se")),
            "expected_accuracy": _estimate(get("expected_accuracy"), get("expected_accuracy_se")),
            "percentile": summarize(percentile[torch.isfinite(percentile)]) if bool(torch.isfinite(percentile).any())
            else {"mean": None, "std": None, "ci95": None, "n": 0},
            "per_episode_percentile": [_finite(round(v, 4)) for v in percentile.tolist()],
            "stalled_episodes": int((get("stalled") > 0).sum()), "tied_episodes": int((get("tied") > 0).sum()),
            "empty_episodes": int((get("empty") > 0).sum())}


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
                                    "variance (scale^2 / 3)") if config.prior == "uniform" else None,
                  **({"nngp": dataclasses.asdict(config.nngp)} if config.prior == "nngp" else {}),
                  "model": config.model, "width": config.width if config.model == "mlp" else None},
        "streams": "per (seed, setting, episode, part, repeat); parts fit, good, poisoned",
        "error": f"se from {config.repeats} independent splitting runs per episode (delta method on log10 of "
                 "their mean, or the runs' log10 spread / sqrt(repeats) if larger); mc_se = Monte Carlo error of "
                 "the mean over episodes; ci95 = over episodes",
        "estimator": "generalized adaptive multilevel splitting (Brehier, Gazeau, Goudenege, Lelievre & Rousset, "
                     "Ann. Appl. Probab. 2016), " + (
                         "in weight space: exact-arc elliptical slice moves of the read-out, shrinking-bracket "
                         "moves of the first layer's pre-activations, float32 chains" if config.model == "mlp" else
                         "LIN-ESS moves of class columns (blocks of block_size points given the rest), float32 chains"),
        "levels_mean": float(values["levels"].mean()),
        "stalled_episodes": int((values["stalled"] > 0).sum()),
        "tied_episodes": int((values["tied"] > 0).sum()),
        "log10_volume": _estimate(values["log10_volume"], values["log10_volume_se"]),
        "expected_accuracy": _estimate(values["expected_accuracy"], values["expected_accuracy_se"]),
    }
    levels = torch.tensor(config.quantiles, dtype=torch.float64)
    quantiles = chains.nanquantile(levels, dim=1)                            # chains outside the cone are NaN
    doc["accuracy_quantiles"] = {"q": config.quantiles,
                                 "mean_over_episodes": [round(v, 6) for v in quantiles.nanmean(1).tolist()],
                                 "per_episode": [[_finite(round(v, 6)) for v in row] for row in quantiles.T.tolist()]}
    # The mixture over episodes of each episode's accuracy distribution, on the grid k / queries.
    counted = chains[~chains.isnan()]
    grid = torch.round(counted * queries).long().clamp(0, queries)
    mass = torch.zeros(queries + 1, dtype=torch.float64).scatter_add_(0, grid, torch.ones(grid.numel(), dtype=torch.float64))
    doc["accuracy_distribution"] = {"accuracy": [k / queries for k in range(queries + 1)],
                                    "mass": [round(v, 8) for v in (mass / mass.sum()).tolist()]}
    doc["heads"] = {}
    for head in heads:
        accuracy = head.per_episode[: chains.shape[0]].double()
        percentile = head_percentile(chains, accuracy)
        doc["heads"][head.name] = {"accuracy_mean": float(accuracy.mean()), "percentile": summarize(percentile),
                                   "per_episode_percentile": [round(v, 4) for v in percentile.tolist()]}
        if matched_key(head.name, "loss") in values:     # G&C at this head's own loss, beside the above
            doc["heads"][head.name]["matched"] = _matched(values, head.name, accuracy, config.matched_loss)
    if "log10_volume_good" in values:
        good, poisoned = values["log10_volume_good"], values["log10_volume_poisoned"]
        doc["log10_volume_good"] = _estimate(good, values["log10_volume_good_se"])
        doc["log10_volume_poisoned"] = _estimate(poisoned, values["log10_volume_poisoned_se"])
        doc["log10_good_over_poisoned"] = _estimate(good - poisoned, (values["log10_volume_good_se"] ** 2 +
                                                                      values["log10_volume_poisoned_se"] ** 2).sqrt())
    return doc
