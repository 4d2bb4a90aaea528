"""Head optimizers against their straightforward implementations, side by side in one run.

Each comparison fits the same synthetic episodes both ways and prints wall time, the speed
ratio, query accuracy (equal accuracy = equal results) and the largest weight difference.

    python bench/heads.py                      # 600 episodes, 5-way 5-shot, 640-d
    python bench/heads.py --episodes 100       # a quicker run
    python bench/heads.py --only sgd           # one comparison
    python bench/heads.py --threads 1          # steadier timings on a shared machine

Add a comparison: write `compare_<name>(data, args)` below and list it in COMPARISONS.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fewshot.heads import HeadFit, get_head


@dataclass
class Episodes:
    """Synthetic episodes of features: [E, S, D] support and [E, Q, D] query, labels [E, *]."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    n_way: int


def synthetic_episodes(count: int, n_way: int = 5, k_shot: int = 5, n_query: int = 15,
                       dim: int = 640, noise: float = 4.5, seed: int = 0) -> Episodes:
    """L2-normalized, class-structured features: a random dense center per class and episode
    plus isotropic Gaussian noise (per coordinate, `noise` times the center's), like pooled
    ReLU-free backbone features. The default noise leaves query accuracy well below 100%."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(count, n_way, dim, generator=gen)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n_way).repeat_interleave(per_class).expand(count, -1).contiguous()
        features = centers.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
        features = features + noise * torch.randn(features.shape, generator=gen)
        return F.normalize(features, dim=2), labels

    support, support_labels = draw(k_shot)
    query, query_labels = draw(n_query)
    return Episodes(support, support_labels, query, query_labels, n_way)


REPEATS = 3          # runs per method; the fastest counts (the machine is shared)
REPEAT_BUDGET = 10.0  # seconds: a method slower than this runs once


def timed(function: Callable[[], HeadFit]) -> tuple[HeadFit, float]:
    """The result and the best wall time of up to REPEATS runs."""
    best, spent = float("inf"), 0.0
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent > REPEAT_BUDGET:
            break
    return result, best


def accuracy(data: Episodes, weight: torch.Tensor, bias: torch.Tensor) -> float:
    logits = torch.baddbmm(bias.unsqueeze(1), data.query, weight)
    return float((logits.argmax(2) == data.query_labels).float().mean())


def report(title: str, rows: list[tuple[str, HeadFit, float]], data: Episodes) -> None:
    """Print time, speed-up over the first row, accuracy and weight difference from it."""
    print(f"\n{title}")
    print(f"  {'method':44s} {'seconds':>9s} {'speed-up':>9s} {'accuracy':>9s} {'max |dW|':>10s}")
    _, reference, reference_seconds = rows[0]
    for name, fit, seconds in rows:
        difference = float((fit.weight - reference.weight).abs().max())
        print(f"  {name:44s} {seconds:9.3f} {reference_seconds / seconds:8.1f}x "
              f"{100 * accuracy(data, fit.weight, fit.bias):8.2f}% {difference:10.2e}")


def sgd_per_episode(data: Episodes, steps: int, lr: float, momentum: float,
                    weight_decay: float) -> HeadFit:
    """The straightforward SGD head: one episode at a time with torch.optim.SGD."""
    weights, biases = [], []
    for features, labels in zip(data.support, data.support_labels):
        weight = torch.zeros(features.shape[1], data.n_way, requires_grad=True)
        bias = torch.zeros(data.n_way, requires_grad=True)
        optimizer = torch.optim.SGD([{"params": [weight], "weight_decay": weight_decay},
                                     {"params": [bias], "weight_decay": 0.0}],
                                    lr=lr, momentum=momentum)
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(features @ weight + bias, labels).backward()
            optimizer.step()
        weights.append(weight.detach())
        biases.append(bias.detach())
    return HeadFit(torch.stack(weights), torch.stack(biases))


def compare_sgd(data: Episodes, args: argparse.Namespace) -> None:
    """`sgd` head, dual (Gram) and primal batched forms, against a per-episode loop."""
    settings = dict(steps=args.steps, lr=0.5, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    dual, primal = get_head("sgd", **settings), get_head("sgd", form="primal", **settings)
    rows = [("torch.optim.SGD, one episode at a time",
             *timed(lambda: sgd_per_episode(data, **settings))),
            ("sgd head, batched primal (torch.optim)",
             *timed(lambda: primal.fit(data.support, data.support_labels, data.n_way,
                                       generator=generator))),
            ("sgd head, batched dual (Gram)",
             *timed(lambda: dual.fit(data.support, data.support_labels, data.n_way,
                                     generator=generator)))]
    report(f"sgd: {args.steps} steps, lr 0.5, momentum 0.9, weight decay 5e-4", rows, data)


def sklearn_per_episode(data: Episodes, C: float) -> HeadFit:
    """The straightforward RFS head: scikit-learn's LogisticRegression per episode (lbfgs).

    scikit-learn runs single-threaded here: its thread pools fighting torch's for 2 cores
    made it about 10x slower on this machine, and the comparison should be against its best.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    weights, biases = [], []
    with threadpool_limits(1):
        for features, labels in zip(data.support.numpy(), data.support_labels.numpy()):
            model = LogisticRegression(C=C, max_iter=1000).fit(features, labels)
            weights.append(torch.from_numpy(model.coef_.T.copy()).float())
            biases.append(torch.from_numpy(model.intercept_.copy()).float())
    return HeadFit(torch.stack(weights), torch.stack(biases))


def compare_logistic_regression(data: Episodes, args: argparse.Namespace) -> None:
    """`logistic_regression` head (batched Newton-CG) against scikit-learn per episode."""
    if importlib.util.find_spec("sklearn") is None:   # a test dependency, optional here
        print("\nlogistic_regression: scikit-learn is not installed; skipped")
        return
    head = get_head("logistic_regression", C=1.0)
    rows = [("scikit-learn LogisticRegression per episode",
             *timed(lambda: sklearn_per_episode(data, 1.0))),
            ("logistic_regression head, batched Newton-CG",
             *timed(lambda: head.fit(data.support, data.support_labels, data.n_way,
                                     generator=torch.Generator())))]
    report("logistic_regression: C = 1 (scikit-learn's default tol 1e-4; ours 1e-5, see its "
           "Config)", rows, data)


COMPARISONS: dict[str, Callable[[Episodes, argparse.Namespace], None]] = {
    "sgd": compare_sgd,
    "logistic_regression": compare_logistic_regression,
}


def bench_parser(doc: str, comparisons: dict) -> argparse.ArgumentParser:
    """The options every heads bench takes: episodes, dimension, threads, which comparisons."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default); 1 is steadier on a busy machine")
    parser.add_argument("--only", choices=sorted(comparisons), action="append",
                        help="run only these comparisons (repeatable)")
    return parser


def bench_data(args: argparse.Namespace) -> Episodes:
    """Sets the thread count, prints the setting and returns the synthetic episodes."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.episodes} episodes, 5-way 5-shot, 15 queries per class, {args.dim}-d "
          f"L2-normalized synthetic features; torch threads: {torch.get_num_threads()}")
    return synthetic_episodes(args.episodes, dim=args.dim)


def main() -> None:
    parser = bench_parser(__doc__, COMPARISONS)
    parser.add_argument("--steps", type=int, default=100, help="SGD steps")
    args = parser.parse_args()
    data = bench_data(args)
    for name in args.only or list(COMPARISONS):
        COMPARISONS[name](data, args)

if __name__ == "__main__":
    main()
