"""Episode sampling speed: the batched sampler vs a per-episode Python loop, same split.

    python bench/sampler.py [--episodes 10000]
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from episodes import EpisodeSampler


def per_episode_loop(labels: torch.Tensor, n_way: int, k_shot: int, n_query: int, count: int, seed: int):
    """What most few-shot code does: pick classes, then images, one episode at a time."""
    rng = random.Random(seed)
    by_class = {c: (labels == c).nonzero().flatten().tolist() for c in labels.unique().tolist()}
    episodes = []
    for _ in range(count):
        classes = rng.sample(sorted(by_class), n_way)
        picks = [rng.sample(by_class[c], k_shot + n_query) for c in classes]
        episodes.append((classes, [p[:k_shot] for p in picks], [p[k_shot:] for p in picks]))
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=10_000)
    args = parser.parse_args()
    labels = torch.arange(20).repeat_interleave(600)  # a 20-class novel split, 600 images each
    start = time.perf_counter()
    EpisodeSampler(labels, 5, 5, 15, seed=0).sample(args.episodes)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    per_episode_loop(labels, 5, 5, 15, args.episodes, seed=0)
    loop = time.perf_counter() - start
    print(f"{args.episodes} episodes, 5-way 5-shot 15-query, 20 classes x 600 images")
    print(f"  EpisodeSampler (batched)   {batched:7.3f} s")
    print(f"  per-episode Python loop    {loop:7.3f} s")
    print(f"  ratio                      {loop / batched:7.1f}x")


if __name__ == "__main__":
    main()
