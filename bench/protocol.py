"""What the fit-protocol options cost: normalized losses and band stops against the raw-loss
run of the same head on the same episodes, side by side in one run.

Every pair does the same amount of work, so the ratio is the price of the option per step or
per candidate: stops are made unreachable (a band or threshold no head gets under), so every
episode runs the whole budget. Target: each ratio within 1.5x.

    python bench/protocol.py                    # 100 episodes, 5-way 5-shot, 640-d
    python bench/protocol.py --threads 1        # steadier timings on a busy machine
    python bench/protocol.py --only sgd         # one head

Data and timing helpers are shared with bench/heads.py (same synthetic episodes).
"""
from __future__ import annotations

import argparse

import torch

from fewshot.heads import get_head
from fewshot.heads.losses import decision_loss
from heads import Episodes, accuracy, bench_data, bench_parser, timed  # bench/heads.py, run as a script

UNREACHABLE = [0.0, 1e-9]  # a band no head reaches: stops are checked but never taken
NEVER = {"loss_threshold": 1e-9}  # the raw run's threshold stop, never taken


def run_pair(title: str, name: str, base: dict, options: list[tuple[str, dict]], data: Episodes,
             unreachable: dict) -> None:
    """Time `name` with `base` settings (raw loss, stops never taken) and with each option (its
    stop never taken either: the price per step); then with a span-norm band whose upper edge
    is the median span-normalized loss the raw run ends at (the stop taken where it is reached).
    Print times, ratios to the raw run, and query accuracy."""
    print(f"\n{title}")
    print(f"  {'settings':52s} {'seconds':>9s} {'ratio':>7s} {'accuracy':>9s}")
    reference, median = None, None
    for label, settings in [("raw loss, stop never taken", unreachable)] + options + [("band", None)]:
        if settings is None:  # a reachable band from the raw run's end point
            settings = {"loss": "span_norm", "band": [0.0, median]}
            label = f"span-norm band (0, {median:.3f}], stop taken"
        head = get_head(name, **base, **settings)
        fit, seconds = timed(lambda: head.fit(data.support, data.support_labels, data.n_way,
                                              generator=torch.Generator().manual_seed(0)))
        if reference is None:
            reference = seconds
            median = float(decision_loss("span_norm", data.support, data.support_labels, fit.weight,
                                         fit.bias).median())
        print(f"  {label:52s} {seconds:9.3f} {seconds / reference:6.2f}x "
              f"{100 * accuracy(data, fit.weight, fit.bias):8.2f}%")


def bench_sgd(data: Episodes, args: argparse.Namespace) -> None:
    run_pair(f"sgd, uniform start, {args.steps} steps (Gram form)", "sgd", {"init": "uniform", "steps": args.steps},
             [("span-norm band stop checked every step", {"loss": "span_norm", "band": UNREACHABLE}),
              ("full-norm band stop checked every step", {"loss": "full_norm", "band": UNREACHABLE}),
              ("span-norm band stop checked every 10 steps", {"loss": "span_norm", "band": UNREACHABLE,
                                                              "check_every": 10})], data, {})


def bench_pattern_search(data: Episodes, args: argparse.Namespace) -> None:
    base = {"init": "uniform", "variant": "block", "chunk_size": 64, "max_evaluations": args.evaluations,
            "min_radius": 1e-30}
    run_pair(f"pattern_search block, uniform start, {args.evaluations} candidates per episode", "pattern_search",
             base, [("span-norm loss, band stop never taken", {"loss": "span_norm", "band": UNREACHABLE}),
                    ("full-norm loss, band stop never taken", {"loss": "full_norm", "band": UNREACHABLE})],
             data, NEVER)


def bench_greedy_random(data: Episodes, args: argparse.Namespace) -> None:
    base = {"init": "uniform", "sigma": 1.0, "candidates": 8, "max_steps": args.evaluations // 40,
            "min_sigma": 1e-30}
    run_pair(f"greedy_random, uniform start, {base['max_steps']} steps of 8 candidates", "greedy_random",
             base, [("span-norm loss, band stop never taken", {"loss": "span_norm", "band": UNREACHABLE}),
                    ("full-norm loss, band stop never taken", {"loss": "full_norm", "band": UNREACHABLE})],
             data, NEVER)


COMPARISONS = {"sgd": bench_sgd, "pattern_search": bench_pattern_search, "greedy_random": bench_greedy_random}


def main() -> None:
    parser = bench_parser(__doc__, COMPARISONS)
    parser.add_argument("--evaluations", type=int, default=10000,
                        help="pattern search candidates per episode (greedy: 1/40 as many steps)")
    parser.add_argument("--steps", type=int, default=300, help="SGD steps")
    parser.set_defaults(episodes=100)
    args = parser.parse_args()
    data = bench_data(args)
    for name in args.only or list(COMPARISONS):
        COMPARISONS[name](data, args)


if __name__ == "__main__":
    main()
