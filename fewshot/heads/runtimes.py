"""Evaluation counts of the searching heads: evaluations used, to the first fit, to loss targets.

The optimizer-benchmarking field (COCO, IOHprofiler, Nevergrad's benchmarks) reports how many
evaluations an optimizer needs to reach a target: a run's *runtime* to target f is the number
of loss evaluations until a candidate with loss <= f is first evaluated. One evaluation is the
decision loss of one candidate head on an episode's support set (whatever its cost: pattern
search's O(S) moves count one each, like a full forward pass). Every searching head reports,
per episode, in its `HeadFit.stats`:

    evaluations          [E]     candidates evaluated (all attempts, restarts included)
    search_dimension     [E]     P, the parameters searched
    evaluations_to_fit   [E]     evaluations until a 100% support-accurate point (inf: never)
    runtimes             [E, T]  evaluations until loss <= targets[t] (inf: not reached)

`targets` (a `FitProtocol` setting, default `DEFAULT_TARGETS`: quarter decades from 10^0.5
down to 0.01) are values of the head's decision loss. The results store them per episode
and `fewshot.results.runtimes` draws the runtime ECDF and data profiles from them.

Example:
    >>> tracker = RuntimeTracker(episodes, targets, device)
    >>> tracker.observe(ids, losses, counted, before)      # after each batch of candidates
    >>> fit.stats.update(tracker.stats(evaluations))
"""
from __future__ import annotations

import math

import torch

# Per-episode costs that add up over restarts: loss evaluations, and SGD's forward + backward passes.
ADDED_UP: tuple[str, ...] = ("evaluations", "forward_backward_evaluations")
# 10^(k/4) for k = 2, 1, ..., -8: 3.16, 1.78, 1, 0.56, ..., 0.01 (log N = 1.61 at 5-way).
DEFAULT_TARGETS: tuple[float, ...] = tuple(round(10 ** (k / 4), 6) for k in range(2, -9, -1))


def default_targets() -> list[float]:
    """`DEFAULT_TARGETS` as a fresh list (a dataclass field default)."""
    return list(DEFAULT_TARGETS)


def targets_rule(targets: list[float]) -> tuple[bool, str, str]:
    """The setting rule of `targets`, for a head's `setting_rules`."""
    ok = bool(targets) and all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in targets)
    return ok, "targets", "a non-empty list of positive losses"


class RuntimeTracker:
    """First evaluation at which each episode reached each target, and its first fit.

    Args:
        episodes: E, the batch size.
        targets: the loss targets [T].
        device: where the batch lives.
    """

    def __init__(self, episodes: int, targets: list[float], device: torch.device | str):
        self.targets = torch.tensor(targets, dtype=torch.float64, device=device)
        self.to_target = torch.full((episodes, len(targets)), math.inf, dtype=torch.float64, device=device)
        self.to_fit = torch.full((episodes,), math.inf, dtype=torch.float64, device=device)

    def observe(self, ids: torch.Tensor, losses: torch.Tensor, counted: torch.Tensor, before: torch.Tensor,
                accurate: torch.Tensor | None = None) -> None:
        """Record a batch of candidates evaluated in order.

        Args:
            ids: [A] rows of the batch.
            losses: [A, C] their decision losses, in evaluation order.
            counted: [A, C] which candidates count as evaluated (the rest are ignored).
            before: [A] evaluations of each row before this batch.
            accurate: [A, C] which candidates are 100% support accurate (None: not known here).
        """
        ordinal = before.to(torch.float64).unsqueeze(1) + counted.cumsum(dim=1).to(torch.float64)
        ordinal = torch.where(counted, ordinal, math.inf)
        hits = losses.to(torch.float64).unsqueeze(2) <= self.targets                        # [A, C, T]
        first = torch.where(hits, ordinal.unsqueeze(2), math.inf).amin(dim=1)               # [A, T]
        self.to_target[ids] = torch.minimum(self.to_target[ids], first)
        if accurate is not None:
            self.fitted_at(ids, torch.where(accurate & counted, ordinal, math.inf).amin(dim=1))

    def fitted_at(self, ids: torch.Tensor, evaluations: torch.Tensor) -> None:
        """Record [A] evaluation counts at which rows `ids` were fitted (inf: not fitted)."""
        self.to_fit[ids] = torch.minimum(self.to_fit[ids], evaluations.to(torch.float64))

    def stats(self, evaluations: torch.Tensor, dimension: int) -> dict[str, torch.Tensor]:
        """The stats of the module doc, given the evaluations [E] used and the parameters searched
        (`search_dimension`, the unit of the data profiles)."""
        return {"evaluations": evaluations.float(), "evaluations_to_fit": self.to_fit.float(),
                "runtimes": self.to_target.float(),
                "search_dimension": torch.full_like(self.to_fit, dimension, dtype=torch.float32)}


def merge_attempt(previous: dict[str, torch.Tensor], again: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stats of restarted episodes: the new attempt's, with its evaluations counted after the old.

    A restart spends evaluations too: `evaluations` (and SGD's `forward_backward_evaluations`)
    add up, and a runtime (or the first fit) the old attempt did not reach is the old attempt's
    evaluations plus the new one's runtime.

    Args:
        previous: the stats of the restarted rows before the restart.
        again: the new attempt's stats of those rows.
    """
    merged = dict(again)
    for key in ADDED_UP:
        if key in previous and key in again:
            merged[key] = previous[key].to(again[key].dtype) + again[key]
    if "evaluations" not in previous or "evaluations" not in again:
        return merged
    spent = previous["evaluations"].to(again["evaluations"].dtype)
    for key in ("evaluations_to_fit", "runtimes"):
        if key in previous and key in again:
            old, shift = previous[key], spent.view(-1, *[1] * (again[key].dim() - 1))
            merged[key] = torch.where(torch.isfinite(old), old, shift + again[key])
    return merged
