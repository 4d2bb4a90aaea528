"""Run every configured head on the same episodes of cached features.

Episodes are processed in fixed chunks, each with its own seeded generator, so a chunk gives
the same numbers whichever process runs it: sharding chunks across ranks reproduces the
single-process results exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any, Callable

import torch

from episodes import Episodes
from fewshot.config import FeaturesConfig, head_spec
from fewshot.run.diagnostics import absent_diagnostics, diagnose
from fewshot.heads import HeadOptimizer, Queries, get_head
from fewshot.run.preprocess import preprocess
from fewshot.results.document import HeadResult

CHUNK_SIZE = 100  # episodes per fit call; part of the definition of the random streams


def chunk_seed(seed: int, head: str, chunk: int) -> int:
    """Seed of one (head, chunk) random stream, stable across processes and machines."""
    return int(hashlib.sha256(f"{seed}/{head}/{chunk}".encode()).hexdigest()[:15], 16)


def episode_tensors(features: torch.Tensor, episodes: Episodes, chunk: int, settings: FeaturesConfig,
                    device: str) -> tuple[torch.Tensor, ...]:
    """Preprocessed support and query features and labels of one chunk of episodes."""
    part = episodes.subset(slice(chunk * CHUNK_SIZE, (chunk + 1) * CHUNK_SIZE))
    support = features[part.support].to(device, non_blocking=True)
    query = features[part.query].to(device, non_blocking=True)
    support, query = preprocess(support, query, normalize=settings.normalize, center=settings.center)
    return support, part.support_labels.to(device), query, part.query_labels.to(device)


def evaluate_chunk(label: str, head: HeadOptimizer, tensors: tuple[torch.Tensor, ...], n_way: int, chunk: int,
                   *, seed: int, device: str) -> dict[str, Any]:
    """Fit and score one chunk of episodes (`episode_tensors`): accuracies, diagnostics, fit time."""
    support, labels, query, query_labels = tensors
    generator = torch.Generator(device=device).manual_seed(chunk_seed(seed, label, chunk))
    start = time.perf_counter()
    # Only oracle heads see the queries; every other head gets exactly the support set.
    oracle = {"queries": Queries(query, query_labels)} if head.oracle else {}
    fit = head.fit(support, labels, n_way, generator=generator, **oracle)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    accuracy = (head.predict(fit, query).argmax(-1) == query_labels).float().mean(-1)
    diagnostics = diagnose(head, fit, support, labels, generator=generator)
    diagnostics.update({f"fit_{name}": value.float() for name, value in fit.stats.items()})
    return {"accuracy": accuracy.cpu(), "seconds": seconds, "absent": absent_diagnostics(fit),
            "diagnostics": {name: value.detach().float().cpu() for name, value in diagnostics.items()}}


def evaluate_heads(features: torch.Tensor, episodes: Episodes, heads: dict[str, dict[str, Any]],
                   settings: FeaturesConfig, *, seed: int, device: str = "cpu", rank: int = 0,
                   world_size: int = 1, gather: Callable[[Any], list[Any]] | None = None,
                   on_chunk: Callable[[str, int], None] = lambda head, episodes_done: None) -> list[HeadResult]:
    """Fit every head on every episode and collect per-episode results.

    Args:
        features: [N, D] raw features of the split the episodes index.
        episodes: the episode set, shared by all heads (paired comparisons).
        heads: label -> settings (see `fewshot.config.head_spec`), in report order.
        settings: feature pre-processing applied per episode.
        seed: seed of the heads' random streams.
        device: where heads run.
        rank, world_size: this process's share of the chunks (chunk i goes to rank i % world_size).
        gather: collects one object from every rank (e.g. `all_gather_object`); needed when world_size > 1.
        on_chunk: progress callback (head name, episodes finished).
    """
    chunks = range((len(episodes) + CHUNK_SIZE - 1) // CHUNK_SIZE)
    # Gathered and preprocessed once, shared by every head.
    tensors = {chunk: episode_tensors(features, episodes, chunk, settings, device)
               for chunk in chunks[rank::world_size]}
    results = []
    for name, entry in heads.items():
        head_name, overrides = head_spec(name, entry)
        head = get_head(head_name, **overrides)
        mine = {}
        for chunk, chunk_tensors in tensors.items():
            mine[chunk] = evaluate_chunk(name, head, chunk_tensors, episodes.n_way, chunk, seed=seed,
                                         device=device)
            on_chunk(name, len(mine[chunk]["accuracy"]))
        if world_size > 1:
            mine = {chunk: part for parts in gather(mine) for chunk, part in parts.items()}
        ordered = [mine[chunk] for chunk in chunks]
        diagnostics = {key: torch.cat([part["diagnostics"][key] for part in ordered])
                       for key in ordered[0]["diagnostics"]}
        results.append(HeadResult(name=name, config={"head": head_name, **dataclasses.asdict(head.config)},
                                  per_episode=torch.cat([part["accuracy"] for part in ordered]),
                                  fit_seconds=sum(part["seconds"] for part in ordered),
                                  diagnostics=diagnostics, oracle=head.oracle,
                                  absent_diagnostics=ordered[0]["absent"]))
    return results
