"""The `blackbox` head's three goals (issue 18), side by side in one run; prints times and ratios.

1. Adapter overhead: diagonal CMA-ES on E episodes at `--budget` evaluations each, pycma
   (`cma` `diagonal`, one Python ask / tell per episode) and the torch adapter (`torch`
   `sep_cma`, batched across episodes): the time inside the loss calls (`EpisodeLoss.__call__`:
   the forward passes, the stop, the counts) against the time outside them (the optimizer, the
   draws, the adapter's copies). Goal: outside <= inside.
2. evotorch's CEM batched across all episodes (`episodes_at_once: 0`) against the same
   algorithm one episode at a time (`episodes_at_once: 1`), per evaluation; the one-at-a-time
   loop runs on the first `--loop-episodes` episodes. Goal: at least 10x.
3. The public loss against the straightforward loss (per candidate, a full forward pass
   `X W + b` and `losses.decision_loss`): the largest difference (tests/fewshot/heads/
   test_episode_loss.py asserts equality) and the speed ratio, on one generation
   (`--population` candidates per episode), both on one thread (the public loss's default)
   and both with torch's threads.

    python bench/blackbox.py                          # 600 episodes, 5-way 5-shot, 640-d, budget 1000
    python bench/blackbox.py --episodes 100 --budget 200   # a quicker run
    python bench/blackbox.py --only loss               # one goal: overhead, batching or loss

Data and timing helpers are shared with bench/heads.py (same synthetic episodes).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from fewshot.heads import get_head
from fewshot.heads.blackbox import torch_adapter
from fewshot.heads.blackbox.adapter import default_population
from fewshot.heads.episode_loss import EpisodeLoss, intra_op_threads
from fewshot.heads.losses import decision_loss
from fewshot.heads.protocol import FitProtocol
from heads import Episodes, bench_data, bench_parser  # bench/heads.py, run as a script

# Never stop before the budget: every run spends exactly its evaluations.
NO_STOP = {"loss_threshold": 1e-12}


def fit_seconds(data: Episodes, settings: dict, episodes: int | None = None) -> tuple[float, float, float, float]:
    """(total seconds, seconds inside the loss calls, evaluations, seconds drawing the torch
    adapter's normals) of one blackbox fit."""
    inside, drawing = [0.0], [0.0]

    def timed(function: Callable, into: list[float]) -> Callable:
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                into[0] += time.perf_counter() - start
        return call

    support, labels = data.support[:episodes], data.support_labels[:episodes]
    head = get_head("blackbox", **settings, **NO_STOP)
    original, normals = EpisodeLoss.__call__, torch_adapter.episode_normals
    EpisodeLoss.__call__, torch_adapter.episode_normals = timed(original, inside), timed(normals, drawing)
    try:
        start = time.perf_counter()
        fit = head.fit(support, labels, data.n_way, generator=torch.Generator().manual_seed(0))
        total = time.perf_counter() - start
    finally:
        EpisodeLoss.__call__, torch_adapter.episode_normals = original, normals
    return total, inside[0], float(fit.stats["evaluations"].sum()), drawing[0]


def one_draw_seconds(episodes: int, popsize: int, size: int, generations: int) -> float:
    """Seconds of the same normals as `generations` batched draws [E, K, P] from one generator (the
    alternative to one generator per episode: its heads would depend on the batch), one thread."""
    generator, out = torch.Generator().manual_seed(0), torch.empty(episodes, popsize, size)
    with intra_op_threads(1):
        start = time.perf_counter()
        for _ in range(generations):
            torch.randn(out.shape, generator=generator, out=out)
        return time.perf_counter() - start


def goal_overhead(data: Episodes, args) -> None:
    """Goal 1: time outside the loss <= time inside, diagonal CMA-ES: pycma and the torch adapter."""
    size = (data.support.shape[2] + 1) * data.n_way
    popsize = default_population(size)
    print(f"\n1. diagonal CMA-ES, {len(data.support)} episodes x {args.budget} evaluations "
          f"(population {popsize}, P = {size})")
    adapters = {"cma": ("diagonal", "pycma + adapter"), "torch": ("sep_cma", "torch sep-CMA")}
    for library in args.libraries.split(","):
        optimizer, what = adapters[library]
        total, inside, evaluations, drawing = fit_seconds(data, {"library": library, "optimizer": optimizer,
                                                                 "budget": args.budget})
        outside = total - inside
        print(f"   {library:5s} {optimizer:8s}: total {total:6.1f} s, inside the loss calls {inside:6.2f} s "
              f"({1e6 * inside / evaluations:.1f} us / evaluation), outside ({what}) {outside:6.2f} s: "
              f"outside / inside = {outside / inside:.2f} (goal <= 1)")
        if library == "torch":
            batched = one_draw_seconds(len(data.support), popsize, size, math.ceil(args.budget / popsize))
            print(f"   of which drawing the normals, one generator per episode: {drawing:.2f} s "
                  f"({drawing / inside:.2f} of the loss time); the same normals in one batched draw per "
                  f"generation: {batched:.2f} s; the rest (ask, tell, bookkeeping): {outside - drawing:.2f} s "
                  f"({(outside - drawing) / inside:.2f} of the loss time)")


def goal_batching(data: Episodes, args) -> None:
    """Goal 2: evotorch CEM batched across episodes vs one episode at a time, per evaluation."""
    settings = {"library": "evotorch", "optimizer": "cem", "budget": args.budget}
    total, _, evaluations, _ = fit_seconds(data, settings)
    loop, _, loop_evaluations, _ = fit_seconds(data, {**settings, "episodes_at_once": 1}, args.loop_episodes)
    batched, single = total / evaluations, loop / loop_evaluations
    print(f"\n2. evotorch cem, budget {args.budget}: batched over {len(data.support)} episodes {total:.1f} s "
          f"({1e6 * batched:.1f} us / evaluation); one at a time on {args.loop_episodes} episodes {loop:.1f} s "
          f"({1e6 * single:.1f} us / evaluation): batched is {single / batched:.1f}x cheaper (goal >= 10)")


def straightforward(support: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor, kind: str) -> torch.Tensor:
    """Per candidate: the full forward pass and the decision loss of `kind`, [E, K]."""
    episodes, count, _ = candidates.shape
    grid = candidates.view(episodes, count, support.shape[2] + 1, -1)
    return torch.stack([decision_loss(kind, support, labels, grid[:, k, :-1], grid[:, k, -1])
                        for k in range(count)], dim=1)


def best_of(function: Callable[[], torch.Tensor], repeats: int = 5) -> tuple[float, torch.Tensor]:
    """The fastest of `repeats` runs (the machine is shared) and the result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function()
        times.append(time.perf_counter() - start)
    return min(times), out


def goal_loss(data: Episodes, args) -> None:
    """Goal 3: the public loss against the straightforward one: equal values, speed ratio."""
    support, labels, n_way = data.support, data.support_labels, data.n_way
    size = (support.shape[2] + 1) * n_way
    candidates = 0.1 * torch.randn(len(support), args.population, size, generator=torch.Generator().manual_seed(1))
    print(f"\n3. one generation: {len(support)} episodes x {args.population} candidates")
    print("   (max diff: float32 features; the public loss forms float32 logits, the reference float64 ones)")
    for kind in ("raw", "full_norm", "span_norm"):
        for threads in (1, None):     # both ways under the same thread setting
            with intra_op_threads(threads):
                slow, reference = best_of(lambda: straightforward(support, labels, candidates, kind), 2)
            fast, values = best_of(lambda: EpisodeLoss(support, labels, n_way, protocol=FitProtocol(loss=kind),
                                                       budget=10 ** 9, threads=threads)(candidates))
            difference = float((values - reference).abs().max())
            print(f"   {kind:9s} threads={threads!s:4s}: straightforward {1e3 * slow:7.1f} ms, public {1e3 * fast:6.1f} ms:"
                  f" {slow / fast:5.1f}x, max diff {difference:.1e}")


GOALS = {"overhead": goal_overhead, "batching": goal_batching, "loss": goal_loss}


def main() -> None:
    parser = bench_parser(__doc__, GOALS)
    parser.add_argument("--budget", type=int, default=1000, help="evaluations per episode")
    parser.add_argument("--libraries", default="cma,torch", help="goal 1's adapters: cma, torch or both")
    parser.add_argument("--loop-episodes", type=int, default=30, help="episodes of the one-at-a-time loop")
    parser.add_argument("--population", type=int, default=28, help="candidates per episode in goal 3")
    args = parser.parse_args()
    data = bench_data(args)
    for name in args.only or list(GOALS):
        GOALS[name](data, args)


if __name__ == "__main__":
    main()
