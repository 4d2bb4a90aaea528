"""Reference heads (max_margin, swa, poisoned) and the diagnostics, side by side in one run.

- max_margin: the batched Crammer-Singer dual (Gram form) against scikit-learn's LinearSVC
  (liblinear, multi_class="crammer_singer", C = 1e5 for the hard margin) one episode at a time.
- swa, poisoned: the Gram (dual) form against the batched primal form (torch.optim).
- diagnose: its cost per head, with and without the max-margin reference already cached.

    python bench/reference_heads.py --episodes 100 --threads 1
    python bench/reference_heads.py --only max_margin

Data and timing helpers are shared with bench/heads.py (same synthetic episodes).
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Callable

import numpy as np
import torch

from fewshot.run.diagnostics import _REFERENCE_CACHE, diagnose
from fewshot.heads import HeadFit, Queries, get_head
from heads import Episodes, bench_data, bench_parser, report, timed  # bench/heads.py, run as a script


def sklearn_crammer_singer(data: Episodes, C: float) -> HeadFit:
    """scikit-learn's Crammer-Singer SVM per episode (single-threaded; its intercept is a weight)."""
    from sklearn.svm import LinearSVC
    weights, biases = [], []
    for features, labels in zip(data.support.numpy(), data.support_labels.numpy()):
        model = LinearSVC(multi_class="crammer_singer", C=C, tol=1e-6, max_iter=100_000).fit(features, labels)
        weights.append(torch.from_numpy(model.coef_.T.astype(np.float32)))
        biases.append(torch.from_numpy(model.intercept_.astype(np.float32)))
    return HeadFit(torch.stack(weights), torch.stack(biases))


def compare_max_margin(data: Episodes, args: argparse.Namespace) -> None:
    """`max_margin` (batched dual, Gram form) against scikit-learn per episode."""
    if importlib.util.find_spec("sklearn") is None:
        print("\nmax_margin: scikit-learn is not installed; skipped")
        return
    head = get_head("max_margin")
    rows = [("scikit-learn LinearSVC crammer_singer, per episode", *timed(lambda: sklearn_crammer_singer(data, 1e5))),
            ("max_margin head, batched dual (Gram)",
             *timed(lambda: head.fit(data.support, data.support_labels, data.n_way, generator=torch.Generator())))]
    report("max_margin: hard margin (scikit-learn C = 1e5, tol 1e-6; ours: relative duality gap 1e-7)", rows, data)


def compare_forms(name: str, data: Episodes, oracle: bool) -> None:
    """One head in its Gram (dual) and primal forms, same settings."""
    extra = {"queries": Queries(data.query, data.query_labels)} if oracle else {}
    rows = []
    for label, form in [("batched primal (torch.optim)", "primal"), ("batched dual (Gram)", "auto")]:
        head = get_head(name, form=form)
        rows.append((f"{name} head, {label}",
                     *timed(lambda: head.fit(data.support, data.support_labels, data.n_way,
                                             generator=torch.Generator().manual_seed(0), **extra))))
    report(f"{name}: default settings ({get_head(name).config})", rows, data)


def compare_diagnostics(data: Episodes, args: argparse.Namespace) -> None:
    """diagnose's cost next to the fit it diagnoses (first call solves the max-margin reference)."""
    print(f"\ndiagnose: seconds per call on {len(data.support)} episodes")
    for name in ["sgd", "logistic_regression", "max_margin"]:
        head = get_head(name)
        fit, fit_seconds = timed(lambda: head.fit(data.support, data.support_labels, data.n_way,
                                                  generator=torch.Generator()))
        _REFERENCE_CACHE.clear()
        start = time.perf_counter()
        diagnose(head, fit, data.support, data.support_labels, generator=torch.Generator())
        first = time.perf_counter() - start
        _, cached = timed(lambda: diagnose(head, fit, data.support, data.support_labels,
                                           generator=torch.Generator()))
        print(f"  {name:24s} fit {fit_seconds:8.3f}  diagnose {first:8.3f} (reference solved), "
              f"{cached:8.3f} (cached)")


COMPARISONS: dict[str, Callable[[Episodes, argparse.Namespace], None]] = {
    "max_margin": compare_max_margin,
    "swa": lambda data, args: compare_forms("swa", data, oracle=False),
    "poisoned": lambda data, args: compare_forms("poisoned", data, oracle=True),
    "diagnostics": compare_diagnostics,
}


def main() -> None:
    args = bench_parser(__doc__, COMPARISONS).parse_args()
    data = bench_data(args)
    for name in args.only or list(COMPARISONS):
        COMPARISONS[name](data, args)


if __name__ == "__main__":
    main()
