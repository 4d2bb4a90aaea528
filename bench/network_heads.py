"""Network heads (issue 19), side by side in one run; prints the ratios against the goals.

1. MLP SGD head, 5-way 5-shot episodes of 640-d features, width 64, 100 steps: the batched head
   (`model: mlp`, Gram form) against per-episode `torch.optim` (goal: >= 50x). The per-episode
   loop is timed on --reference-episodes and scaled to the same number of episodes (it is a
   loop over independent episodes: its time is linear in them).
2. MLP pattern search: incremental candidates against a full forward pass per candidate, the same
   trajectory (goal: >= 30x).
3. The NNGP volume analysis against the linear one on the same episodes (goal: <= 1.2x).

    python bench/network_heads.py [--episodes 600] [--reference-episodes 60]
"""
from __future__ import annotations

import argparse
import time

import torch

from fewshot.heads import get_head
from fewshot.heads.mlp_compass import search_network
from fewshot.heads.mlp_model import MLPModel
from fewshot.run.volume_analysis import analyze_in_batches
from fewshot.volume.config import VolumeConfig


def episodes(count: int, shots: int, dim: int, n_way: int = 5, queries: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(count, n_way, dim, generator=g)
    labels = torch.arange(n_way).repeat(shots + queries).expand(count, -1).contiguous()
    x = centres.gather(1, labels.unsqueeze(2).expand(-1, -1, dim)) + 1.5 * torch.randn(count, labels.shape[1], dim, generator=g)
    x = x / x.norm(dim=2, keepdim=True)
    cut = shots * n_way
    return x[:, :cut], labels[:, :cut], x[:, cut:], labels[:, cut:]


def per_episode_sgd(support, labels, start, model, steps, lr=0.5, momentum=0.9, wd=5e-4):
    dim, n_way = support.shape[2], 5
    for e in range(len(support)):
        layers = model.layers(start[e].clone(), dim, n_way)
        weights = [layer[:-1].clone().requires_grad_(True) for layer in layers]
        biases = [layer[-1].clone().requires_grad_(True) for layer in layers]
        opt = torch.optim.SGD([{"params": weights, "weight_decay": wd}, {"params": biases, "weight_decay": 0.0}],
                              lr=lr, momentum=momentum)
        for _ in range(steps):
            opt.zero_grad()
            hidden = support[e]
            for i, (w, b) in enumerate(zip(weights, biases)):
                hidden = (hidden.relu() if i else hidden) @ w + b
            torch.nn.functional.cross_entropy(hidden, labels[e]).backward()
            opt.step()


class _Quiet:
    def __init__(self, config):
        self.config = config

    def on_accept(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--reference-episodes", type=int, default=60)
    parser.add_argument("--search-episodes", type=int, default=10)
    parser.add_argument("--volume-episodes", type=int, default=25)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    support, labels, _, _ = episodes(args.episodes, 5, 640)
    head = get_head("sgd", model="mlp", width=64, init="uniform", steps=100)
    start = time.perf_counter()
    fit = head.fit(support, labels, 5, generator=torch.Generator().manual_seed(0))
    batched = time.perf_counter() - start
    model = MLPModel(64, 1)
    starts = model.draw_start("uniform", 1.0, args.reference_episodes, 640, 5, torch.Generator().manual_seed(0), "cpu")
    start = time.perf_counter()
    per_episode_sgd(support[:args.reference_episodes], labels[:args.reference_episodes], starts, model, 100)
    reference = (time.perf_counter() - start) * args.episodes / args.reference_episodes
    print(f"1. MLP SGD, {args.episodes} episodes 5-way 5-shot 640-d, H=64, 100 steps: batched {batched:.2f} s, "
          f"per-episode torch.optim {reference:.1f} s (scaled from {args.reference_episodes}): "
          f"{reference / batched:.0f}x (goal >= 50x); support accuracy {float(fit.stats['fitted'].mean()):.3f}")

    support, labels, _, _ = episodes(args.search_episodes, 5, 640, seed=1)
    # The parallel variant evaluates whole blocks of candidates per round, so the per-candidate cost
    # shows; opportunistic rounds are ~4 candidates and dominated by per-round overhead.
    config = get_head("pattern_search", model="mlp", width=64, init="uniform", max_evaluations=2000,
                      chunk_size=256, variant="parallel").config
    times, params = [], []
    for incremental in (True, False):
        start = time.perf_counter()
        result = search_network(_Quiet(config), model, support, labels, 5, torch.Generator().manual_seed(0), incremental)
        times.append(time.perf_counter() - start)
        params.append(result.params)
    print(f"2. MLP pattern search (parallel, blocks of 256), {args.search_episodes} episodes, H=64, 2000 evaluations: incremental "
          f"{times[0]:.2f} s, full forward {times[1]:.2f} s: {times[1] / times[0]:.0f}x (goal >= 30x); "
          f"same result: {torch.equal(params[0], params[1])}")

    support, labels, query, query_labels = episodes(args.volume_episodes, 1, 640, queries=15, seed=2)
    ids = list(range(args.volume_episodes))
    seconds = {}
    for prior in ("gaussian", "nngp"):
        config = VolumeConfig(enabled=True, prior=prior, poisoned=False)
        start = time.perf_counter()
        analyze_in_batches(support, labels, query, query_labels, 5, ids, config, seed=0, setting="bench")
        seconds[prior] = time.perf_counter() - start
    print(f"3. volume analysis, {args.volume_episodes} episodes 5-way 1-shot: linear {seconds['gaussian']:.2f} s, "
          f"NNGP {seconds['nngp']:.2f} s: {seconds['nngp'] / seconds['gaussian']:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
