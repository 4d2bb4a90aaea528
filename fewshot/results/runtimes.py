"""Runtime profiles from the stored per-episode runtimes: the COCO ECDF and Moré-Wild data profiles.

A searching head stores, per episode, the evaluations it needed to reach each loss target
(`per_episode_runtimes`, null where it never did; `fewshot.heads.runtimes`), the targets
(`runtime_targets`), its evaluations (`per_episode_evaluations`) and the dimension P of its
search (`runtime_dimension`). The curves below are computed from those values alone, by the
writer and again by the reader (`fewshot.results.verify`), like every other statistic.

- Runtime ECDF (COCO, Hansen et al. 2021, "COCO: a platform for comparing continuous
  optimizers in a black-box setting"): the problems are the (episode, target) pairs; at a
  budget of t evaluations, ECDF(t) = the fraction of pairs whose runtime is <= t. Pairs never
  reached count as infinite runtimes and stay in the denominator, so a curve tops out at the
  fraction reached. Budgets on a log grid (ten per decade).
- Data profile (Moré & Wild 2009, "Benchmarking derivative-free optimization algorithms"):
  d(alpha) = the fraction of problems solved within alpha (P + 1) evaluations, alpha in
  simplex gradients. Moré and Wild's convergence test is relative to the best value any
  solver found, f(x0) - f >= (1 - tau)(f(x0) - f_L); here the problems' test is the fixed
  loss targets instead, so the profile of a head does not change when another head joins
  the file (a deliberate departure: it is the same ECDF on a budget axis scaled by P + 1).

Example:
    >>> runtime_profile([[3, None], [1, 7]], 20, 4)["ecdf"]
"""
from __future__ import annotations

import math
from typing import Sequence

STEPS_PER_DECADE = 10
ALPHAS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def budget_grid(largest: int) -> list[int]:
    """Evaluation budgets 1 .. largest, about ten per decade (rounded to distinct integers)."""
    top = max(int(largest), 1)
    steps = math.ceil(STEPS_PER_DECADE * math.log10(top)) if top > 1 else 0
    grid = sorted({min(top, round(10 ** (k / STEPS_PER_DECADE))) for k in range(steps + 1)} | {top})
    return grid


def _fraction_within(runtimes: Sequence[Sequence[int | None]], budget: float) -> float:
    pairs = sum(len(row) for row in runtimes)
    reached = sum(1 for row in runtimes for value in row if value is not None and value <= budget)
    return reached / pairs if pairs else 0.0


def runtime_profile(runtimes: Sequence[Sequence[int | None]], largest: int, dimension: int) -> dict:
    """The ECDF over an evaluation grid and the data profile over simplex gradients.

    Args:
        runtimes: per episode, per target, the evaluations to reach it (None: never).
        largest: the most evaluations any episode used (the grid's end).
        dimension: P, the parameters searched (the data profile's unit is P + 1 evaluations).
    """
    grid = budget_grid(largest)
    alphas = [alpha for alpha in ALPHAS if alpha * (dimension + 1) <= max(grid[-1], dimension + 1)]
    return {"pairs": sum(len(row) for row in runtimes),
            "reached": sum(1 for row in runtimes for value in row if value is not None),
            "ecdf": {"evaluations": grid, "fraction": [_fraction_within(runtimes, t) for t in grid]},
            "data_profile": {"simplex_gradients": [float(a) for a in alphas],
                             "fraction": [_fraction_within(runtimes, a * (dimension + 1)) for a in alphas]}}


def head_runtime_profile(head: dict) -> dict | None:
    """The runtime profile of a stored head, or None when it stores no runtimes."""
    if "per_episode_runtimes" not in head:
        return None
    largest = max(head.get("per_episode_evaluations") or [1])
    return runtime_profile(head["per_episode_runtimes"], largest, head.get("runtime_dimension", 0))
