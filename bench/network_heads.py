"""Network heads (issue 19), side by side in one run; prints the ratios against the goals.

1. MLP SGD head, 5-way 5-shot episodes of 640-d features, width 64, 100 steps: the batched head
   (`model: mlp`, Gram form) against per-episode `torch.optim` (goal: >= 50x). The per-episode
   loop is timed on --reference-episodes and scaled to the same number of episodes (it is a
   loop over independent episodes: its time is linear in them).
2. MLP pattern search: incremental candidates against a full forward pass per candidate, the same
   trajectory (goal: >= 30x); --search-episodes (10) 5-way 5-shot episodes of 640-d features,
   H = 64, --search-evaluations (1000) per episode, both variants (`parallel` in blocks of 256,
   `opportunistic`).
3. The NNGP volume analysis against the linear one on the same --volume-episodes (100) 5-way
   episodes, 1 and 5 shots, 15 queries per class, no good/poisoned volumes (goal: <= 1.2x), with
   the levels and the time per level and episode of each: the levels are inherent (a smaller
   volume needs more), the time per level is what the prior adds.
4. The finite-width (H = 64) volume analysis in weight space of 100 5-way 1-shot episodes (goal:
   under 5 minutes, per-episode error of log10 P(fit) at most 0.3 decades), beside the NNGP one.

    python bench/network_heads.py [--episodes 600] [--reference-episodes 60] [--threads 0]
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
    parser.add_argument("--search-evaluations", type=int, default=1000)
    parser.add_argument("--volume-episodes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for 1-3 (0: torch's default)")
    parser.add_argument("--mlp-volume-episodes", type=int, default=100)
    parser.add_argument("--mlp-volume-threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    # Both variants: parallel rounds are blocks of 256 candidates (the per-candidate cost shows);
    # opportunistic rounds are ~4 candidates with an accepted move in about half of them (the
    # per-round and per-accept costs show). The incremental search runs on one intra-op thread
    # (its own choice, see mlp_compass.py); the reference keeps torch's threads.
    for variant in ("parallel", "opportunistic"):
        config = get_head("pattern_search", model="mlp", width=64, init="uniform", max_evaluations=args.search_evaluations,
                          chunk_size=256, variant=variant).config
        times, params = [], []
        for incremental in (True, False):
            start = time.perf_counter()
            result = search_network(_Quiet(config), model, support, labels, 5, torch.Generator().manual_seed(0), incremental)
            times.append(time.perf_counter() - start)
            params.append(result.params)
        print(f"2. MLP pattern search ({variant}), {args.search_episodes} episodes 5-way 5-shot 640-d, H=64, "
              f"{args.search_evaluations} evaluations, {float(result.stats['accepted'].mean()):.0f} accepted moves per "
              f"episode: incremental {times[0]:.2f} s, full forward {times[1]:.2f} s: {times[1] / times[0]:.0f}x "
              f"(goal >= 30x); same result: {torch.equal(params[0], params[1])}")

    # The same episodes under both priors, 1 and 5 shots, 15 queries per class. A splitting run's cost
    # is (levels) x (cost per level); the levels follow from log10 P(fit) (one per factor of
    # ~1 / level_fraction), so a smaller NNGP volume costs more levels: inherent. The time per
    # level (per episode) is what the prior itself adds (kernel, factorization, sampling).
    for shots in (1, 5):
        support, labels, query, query_labels = episodes(args.volume_episodes, shots, 640, queries=15, seed=2)
        ids = list(range(args.volume_episodes))
        seconds, levels, volume = {}, {}, {}
        for prior in ("gaussian", "nngp"):
            config = VolumeConfig(enabled=True, prior=prior, poisoned=False)
            start = time.perf_counter()
            out = analyze_in_batches(support, labels, query, query_labels, 5, ids, config, seed=0, setting="bench")
            seconds[prior] = time.perf_counter() - start
            levels[prior], volume[prior] = float(out["levels"].mean()), float(out["log10_volume"].mean())
        per_level = {prior: 1e3 * seconds[prior] / (levels[prior] * args.volume_episodes) for prior in seconds}
        print(f"3. volume analysis, {args.volume_episodes} episodes 5-way {shots}-shot: linear {seconds['gaussian']:.2f} s "
              f"({levels['gaussian']:.1f} levels, log10 P(fit) {volume['gaussian']:.2f}, {per_level['gaussian']:.2f} ms "
              f"per level and episode), NNGP {seconds['nngp']:.2f} s ({levels['nngp']:.1f} levels, log10 P(fit) "
              f"{volume['nngp']:.2f}, {per_level['nngp']:.2f} ms): {seconds['nngp'] / seconds['gaussian']:.2f}x "
              f"(goal <= 1.2x); levels {levels['nngp'] / levels['gaussian']:.2f}x, time per level "
              f"{per_level['nngp'] / per_level['gaussian']:.2f}x")

    finite_width_volume(args.mlp_volume_episodes, args.mlp_volume_threads)


def finite_width_volume(count: int, threads: int) -> None:
    """Goal 4: the finite-width (H = 64) volume analysis in weight space beside the NNGP one, same episodes.

    Alone: cd bench && python -c "import network_heads; network_heads.finite_width_volume(100, 1)"
    """
    support, labels, query, query_labels = episodes(count, 1, 640, queries=15, seed=3)
    ids, before = list(range(count)), torch.get_num_threads()
    # Small batched ops (5 points x 64 units per chain): one intra-op thread avoids the sync cost of two.
    torch.set_num_threads(threads)
    out, seconds = {}, {}
    for name, model in (("NNGP", "linear"), ("H=64", "mlp")):
        config = VolumeConfig(enabled=True, prior="nngp", model=model, width=64, poisoned=False)
        start = time.perf_counter()
        out[name] = analyze_in_batches(support, labels, query, query_labels, 5, ids, config, seed=0, setting="bench")
        seconds[name] = time.perf_counter() - start
    torch.set_num_threads(before)
    se = out["H=64"]["log10_volume_se"]
    print(f"4. finite-width volume analysis (weight space), {count} episodes 5-way 1-shot 640-d, H=64, 64 chains x 4 "
          f"repeats, {threads} thread(s): {seconds['H=64']:.1f} s (goal < 300 s; the NNGP's {seconds['NNGP']:.1f} s on "
          f"the same episodes); per-episode error of log10 P(fit): median {float(se.median()):.3f}, max "
          f"{float(se.max()):.3f} decades (goal <= 0.3), {int((se > 0.3).sum())} episodes over; mean log10 P(fit) "
          f"{float(out['H=64']['log10_volume'].mean()):.2f} (NNGP {float(out['NNGP']['log10_volume'].mean()):.2f}); "
          f"volume-weighted accuracy {float(out['H=64']['expected_accuracy'].mean()):.3f} "
          f"(NNGP {float(out['NNGP']['expected_accuracy'].mean()):.3f})")

if __name__ == "__main__":
    main()
