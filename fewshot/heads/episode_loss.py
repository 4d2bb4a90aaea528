"""The public batched episode loss: what a gradient-free optimizer needs from the suite.

`EpisodeLoss` holds E episodes' support sets and the shared fit protocol
(`fewshot.heads.protocol.FitProtocol`). Called with K candidate heads per episode it returns
their decision losses and, on the way, does the bookkeeping every searching head needs:

- the loss of the head's `loss` kind (`raw`, `full_norm`, `span_norm`; `fewshot.heads.losses`),
- the evaluation budget: at most `budget` candidates per episode are evaluated; candidates
  past it (and those of episodes already stopped) get loss +inf and do not count,
- the stop: 100% support accuracy, decision loss <= the band's upper edge, below `threshold`
  (`protocol.reached_stop`), checked on every `check_every`-th call of an episode (a call is
  one generation of a population method); the first candidate in the given order that meets
  it is the episode's head and the episode stops (`stopped`),
- the best head so far: until the stop, the lowest-loss candidate evaluated,
- evaluation counts and runtimes to the loss targets (`fewshot.heads.runtimes`).

Candidate layout: a flat vector per head, `candidates` [A, K, P] with P = model.n_params(D, N).
For the linear model (the default, `fewshot.heads.head_model.LinearModel`) that is
[A, K, (D + 1) * N], viewable as [A, K, D + 1, N]: the D weight rows, then the bias row
(parameter p = d * N + n). Rows of `candidates` are the episodes `episodes` [A] (default all).

Example:
    >>> loss = EpisodeLoss(support, labels, 5, protocol=head.config, budget=1000)
    >>> while loss.active().any():
    ...     ids = loss.active().nonzero().squeeze(1)
    ...     values = loss(candidates_for(ids), ids)          # [A, K] float64
    >>> fit = loss.result()                                  # HeadFit of the best heads
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from episodes.errors import fail
from fewshot.heads.base import HeadFit
from fewshot.heads.common import linear_accuracy, linear_loss
from fewshot.heads.head_model import HeadModel, LinearModel
from fewshot.heads.losses import normalized_loss, span_gram_pinv, span_norm_sq
from fewshot.heads.protocol import FitProtocol, reached_stop
from fewshot.heads.runtimes import RuntimeTracker

STOPPED, BUDGET, ENDED = 0, 2, 3  # stop reasons: the protocol's stop, the budget, the optimizer ended


class EpisodeLoss:
    """Decision losses of candidate heads for a batch of episodes (see the module doc).

    Args:
        support: [E, S, D] support features.
        labels: [E, S] labels in [0, n_way).
        n_way: classes per episode.
        protocol: the head's fit settings (loss, band, check_every, targets, ...).
        budget: evaluations per episode.
        threshold: the head's `loss_threshold` (None: none).
        model: what a flat parameter vector means (default: a linear head).
        start: [E, P] the starting heads: the best head until a candidate beats its loss
            (None: no head is kept until the first call).
        threads: torch's intra-op threads while a call computes on the CPU (None: leave torch's
            setting). The default 1: a call is ~20 passes over small tensors (100 episodes x
            10 candidates x 25 points x 5 classes: 125k numbers), where a thread barrier per
            pass costs more than the pass; on the busy 2-core machine each barrier waited ~11 ms
            for a descheduled thread, 150 ms a call against 11 ms on one thread
            (`bench/blackbox.py`).
    """

    def __init__(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *, protocol: FitProtocol,
                 budget: int, threshold: float | None = None, model: HeadModel | None = None,
                 start: torch.Tensor | None = None, threads: int | None = 1):
        self.threads = threads if support.device.type == "cpu" else None
        self.model = model if model is not None else LinearModel()
        if protocol.loss == "span_norm" and not self.model.supports_span_norm:
            raise fail(f"The span_norm loss is defined for linear heads, not for the {self.model.name!r} model.",
                       "Set the head's loss to raw or full_norm.")
        self.support, self.labels, self.n_way = support, labels.long(), n_way
        self.protocol, self.budget, self.threshold = protocol, budget, threshold
        episodes, _, dim = support.shape
        self.n_params = self.model.n_params(dim, n_way)
        device = support.device
        self.every = torch.arange(episodes, device=device)
        self.pinv = span_gram_pinv(support) if protocol.loss == "span_norm" else None
        self.evaluations = torch.zeros(episodes, dtype=torch.long, device=device)
        self.calls = torch.zeros_like(self.evaluations)
        self.stopped = torch.zeros(episodes, dtype=torch.bool, device=device)
        self.ended = torch.zeros_like(self.stopped)
        self.best = support.new_zeros(episodes, self.n_params) if start is None else start.clone()
        self.best_loss = torch.full((episodes,), math.inf, dtype=torch.float64, device=device)
        self.tracker = RuntimeTracker(episodes, protocol.targets, device)
        if start is not None:  # the start is the best head until beaten; what it reaches, it reaches at 0
            with intra_op_threads(self.threads):
                values, accurate = self.losses(start.unsqueeze(1), self.every)
            self.best_loss = values.squeeze(1)
            self.tracker.observe(self.every, values, torch.ones_like(accurate), self.evaluations - 1, accurate)

    def losses(self, candidates: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decision losses [A, K] (float64) and 100%-accuracy flags of candidates; nothing counted."""
        whole = ids is self.every   # all episodes in order: no copy of the support set
        logits = self.model.logits(candidates, self.support if whole else self.support[ids])  # [A, K, S, N]
        labels = (self.labels if whole else self.labels[ids]).unsqueeze(1)
        kind = self.protocol.loss
        if kind == "raw":
            values = linear_loss(logits.double(), labels)
        else:
            norm_sq = self.model.full_norm_sq(candidates, self.support.shape[2]) if kind == "full_norm" \
                else span_norm_sq(logits, self.pinv[ids])
            values = normalized_loss(logits.double(), labels, norm_sq.sqrt())
        return values, linear_accuracy(logits, labels) == 1.0

    def active(self) -> torch.Tensor:
        """[E] episodes still searching: not stopped, not ended, budget left."""
        return ~self.stopped & ~self.ended & (self.evaluations < self.budget)

    def end(self, ids: torch.Tensor) -> None:
        """Mark episodes whose optimizer stopped on its own (converged, or out of moves)."""
        self.ended[ids] = True

    def __call__(self, candidates: torch.Tensor, episodes: torch.Tensor | None = None) -> torch.Tensor:
        """Decision losses [A, K] of candidates [A, K, P] of episodes [A] (default all), float64.

        Candidates past an episode's budget, and all of a stopped or ended episode, get +inf
        and are not counted.
        """
        ids = self.every if episodes is None or (len(episodes) == len(self.every) and torch.equal(
            episodes, self.every)) else episodes
        if candidates.dim() != 3 or candidates.shape[0] != len(ids) or candidates.shape[2] != self.n_params:
            raise ValueError(f"candidates must be [{len(ids)}, K, {self.n_params}], got {tuple(candidates.shape)}")
        with intra_op_threads(self.threads):
            return self._count(candidates, ids)

    def _count(self, candidates: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """`__call__` on checked input: losses, the stop, the best heads and the counts."""
        values, accurate = self.losses(candidates, ids)
        order = torch.arange(candidates.shape[1], device=ids.device)
        allowed = (order < (self.budget - self.evaluations[ids]).unsqueeze(1)) & self.active()[ids].unsqueeze(1)
        due = self.calls[ids] % self.protocol.check_every == 0
        meets = reached_stop(accurate, values, self.protocol, self.threshold) & allowed & due.unsqueeze(1)
        found, first = meets.any(dim=1), meets.to(torch.uint8).argmax(dim=1)
        lowest, lowest_at = values.masked_fill(~allowed, math.inf).min(dim=1)
        improved = ~found & (lowest < self.best_loss[ids])
        pick = torch.where(found, first, lowest_at)
        keep = found | improved
        rows = torch.arange(len(ids), device=ids.device)
        self.best[ids[keep]] = candidates[rows, pick][keep].to(self.best.dtype)
        self.best_loss[ids[keep]] = values[rows, pick][keep]
        self.stopped[ids[found]] = True
        self.tracker.observe(ids, values, allowed, self.evaluations[ids], accurate)
        self.evaluations[ids] += allowed.sum(dim=1)
        self.calls[ids] += 1
        return values.masked_fill(~allowed, math.inf)

    def result(self, stats: dict[str, torch.Tensor] | None = None) -> HeadFit:
        """The best (or stopping) head of every episode, with the evaluation stats and `stats`.

        Stats: `evaluations`, `evaluations_to_fit`, `runtimes` ([E, T]), `calls` (generations),
        `stop_reason` (0 stop reached, 2 budget, 3 the optimizer ended) and `support_loss`.
        """
        reason = torch.where(self.stopped, STOPPED, torch.where(self.evaluations >= self.budget, BUDGET, ENDED))
        out = {**self.tracker.stats(self.evaluations, self.n_params), "calls": self.calls.float(), "stop_reason": reason.float(),
               "support_loss": self.best_loss.float(), **(stats or {})}
        dim = self.support.shape[2]
        return self.model.head_fit(self.best.to(self.support.dtype), dim, self.n_way, out)


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most `threads` torch intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
