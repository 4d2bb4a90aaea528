"""Gradient-free heads against their straightforward implementations, side by side in one run.

`pattern_search` (incremental O(S) candidates, chunked, batched over episodes) against the
seed-style search: one episode at a time, every candidate a full forward pass of the perturbed
head (perturb one parameter, logits = X W + b, cross-entropy, keep or restore), with the same
poll orders and stop rule. Equal query accuracy (and weights) means equal trajectories.

    python bench/heads_gradient_free.py                       # 600 episodes, 5-way 5-shot, 640-d
    python bench/heads_gradient_free.py --episodes 100        # a quicker run
    python bench/heads_gradient_free.py --seed-style-episodes 60   # time the slow loop on a
                                                              # subset; its time is extrapolated
    python bench/heads_gradient_free.py --threads 1           # steadier timings on a busy machine
    python bench/heads_gradient_free.py --float64             # exactness check (see below)

In float32 the seed-style forward pass rounds each loss differently from the O(S) formula, so
where two losses differ by less than float32 resolution the two searches can take different
moves (a few episodes in a hundred). In float64 those near-ties vanish and the weights agree.

Data and timing helpers are shared with bench/heads.py (same synthetic episodes).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F

from fewshot.heads import HeadFit, get_head
from fewshot.heads.compass import episode_keys, poll_order, poll_side
from fewshot.heads.pattern_search import BUDGET, FITTED, MIN_RADIUS
from heads import Episodes, accuracy, bench_data, bench_parser, timed  # bench/heads.py, run as a script


def seed_style_pattern_search(data: Episodes, radius: float, min_radius: float, max_evaluations: int,
                              loss_threshold: float | None, generator: torch.Generator) -> HeadFit:
    """Opportunistic compass search one episode at a time, like the seed repo's (unused) one-at-a-time class."""
    episodes, shots, dim = data.support.shape
    n_way = data.n_way
    size = 2 * (dim + 1) * n_way
    side = poll_side(size)
    keys = episode_keys(episodes, generator, data.support.device)
    weights, biases, evaluations, reasons = [], [], [], []
    for e in range(episodes):
        features = torch.cat([data.support[e], data.support.new_ones(shots, 1)], dim=1)   # [S, D + 1]
        labels = data.support_labels[e]
        params = data.support.new_zeros((dim + 1) * n_way)
        head = params.view(dim + 1, n_way)
        logits = features @ head
        best = F.cross_entropy(logits, labels)
        step, used, poll = radius, 0, 0
        while True:
            fitted = bool((logits.argmax(1) == labels).all())
            if fitted and (loss_threshold is None or best < loss_threshold):
                reason = FITTED
                break
            if step < min_radius:
                reason = MIN_RADIUS
                break
            if used >= max_evaluations:
                reason = BUDGET
                break
            order = poll_order(keys[e:e + 1], torch.tensor([poll]), torch.arange(side * side)[None], side)[0]
            poll += 1
            moved, completed = False, True
            for candidate in order[order < size].tolist():
                if used >= max_evaluations:
                    completed = False
                    break
                used += 1
                param = candidate >> 1
                old = params[param].clone()
                params[param] += -step if candidate & 1 else step
                trial_logits = features @ head
                loss = F.cross_entropy(trial_logits, labels)
                if loss < best:
                    best, logits, moved = loss, trial_logits, True
                    break
                params[param] = old
            if not moved and completed:
                step /= 2
        weights.append(head[:dim].clone())
        biases.append(head[dim].clone())
        evaluations.append(used)
        reasons.append(reason)
    stats = {"evaluations": torch.tensor(evaluations, dtype=torch.float),
             "stop_reason": torch.tensor(reasons, dtype=torch.float)}
    return HeadFit(torch.stack(weights), torch.stack(biases), stats)


def subset(data: Episodes, count: int) -> Episodes:
    return Episodes(data.support[:count], data.support_labels[:count], data.query[:count],
                    data.query_labels[:count], data.n_way)


def compare_pattern_search(data: Episodes, args: argparse.Namespace, loss_threshold: float | None) -> None:
    """`pattern_search` fast path against the seed-style loop, same stop rule."""
    settings = dict(radius=1.0, min_radius=1e-4, max_evaluations=args.max_evaluations,
                    loss_threshold=loss_threshold)
    head = get_head("pattern_search", **settings)
    fast, fast_seconds = timed(lambda: head.fit(data.support, data.support_labels, data.n_way,
                                                generator=torch.Generator().manual_seed(0)))
    count = min(args.seed_style_episodes or len(data.support), len(data.support))
    part = subset(data, count)
    start = time.perf_counter()
    slow = seed_style_pattern_search(part, generator=torch.Generator().manual_seed(0), **settings)
    slow_seconds = (time.perf_counter() - start) * len(data.support) / count
    fast_part = HeadFit(fast.weight[:count], fast.bias[:count], fast.stats)
    same = [bool(torch.equal(a, b) and torch.equal(c, d)) for a, b, c, d in
            zip(fast_part.weight, slow.weight, fast_part.bias, slow.bias)]
    rule = "100% support accuracy" if loss_threshold is None else f"100% accuracy and loss < {loss_threshold}"
    print(f"\npattern_search, stop at {rule}  (radius 1, min_radius 1e-4, budget {args.max_evaluations})")
    extrapolated = f"  [timed on {count} episodes, scaled to {len(data.support)}]" if count < len(data.support) else ""
    print(f"  {'method':46s} {'seconds':>9s} {'speed-up':>9s} {'accuracy':>9s}")
    print(f"  {'seed style: per episode, full forward per move':46s} {slow_seconds:9.2f} {1.0:8.1f}x "
          f"{100 * accuracy(part, slow.weight, slow.bias):8.2f}%{extrapolated}")
    print(f"  {'pattern_search head: O(S) moves, chunked, batched':46s} {fast_seconds:9.2f} "
          f"{slow_seconds / fast_seconds:8.1f}x {100 * accuracy(data, fast.weight, fast.bias):8.2f}%")
    if count < len(data.support):
        print(f"  {'pattern_search head on the same ' + str(count) + ' episodes':46s} {'':9s} {'':9s} "
              f"{100 * accuracy(part, fast_part.weight, fast_part.bias):8.2f}%")
    print(f"  identical weights in {sum(same)} of {count} episodes; mean evaluations per episode "
          f"{float(fast.stats['evaluations'].mean()):.0f}, accepted moves {float(fast.stats['accepted'].mean()):.0f}, "
          f"non-zero weights {100 * float((fast.weight != 0).float().mean()):.1f}%")


COMPARISONS: dict[str, Callable[[Episodes, argparse.Namespace], None]] = {
    "pattern_search": lambda data, args: compare_pattern_search(data, args, None),
    "pattern_search_loss_0.1": lambda data, args: compare_pattern_search(data, args, 0.1),
}


def main() -> None:
    parser = bench_parser(__doc__, COMPARISONS)
    parser.add_argument("--seed-style-episodes", type=int, default=0,
                        help="run the slow loops on only the first N episodes and scale their time (0 = all)")
    parser.add_argument("--max-evaluations", type=int, default=500_000)
    parser.add_argument("--float64", action="store_true",
                        help="features in float64: both searches then resolve near-ties alike")
    args = parser.parse_args()
    data = bench_data(args)
    if args.float64:
        data = Episodes(data.support.double(), data.support_labels, data.query.double(), data.query_labels,
                        data.n_way)
    with torch.inference_mode():
        for name in args.only or list(COMPARISONS):
            COMPARISONS[name](data, args)


if __name__ == "__main__":
    main()
