"""The `pattern_search` head: compass search on the weight and bias, no gradients.

The algorithm (the one-at-a-time `PatternSearch` class of Chiang et al., 2023, and their
published block variant), per episode, from the configured start (`init`, default W = 0, b = 0):

    loss = support loss at the current point; radius = config.radius
    until fitted, radius < min_radius or evaluations == max_evaluations:
        a new poll: the 2P moves "parameter p by +radius / -radius" in a fresh random order
        opportunistic: evaluate the moves in that order; at the first one that lowers the
            loss, take it and end the poll (the next poll starts over with a fresh order)
        parallel: evaluate the order in blocks of `chunk_size`; take the block's best move
            if it lowers the loss and end the poll, else go on with the next block
        block (the seed's published variant): evaluate the order in blocks of `chunk_size`;
            take the best of the block and the current point, and go on with the next block
            of the same order; when the order is used up, halve the radius and reshuffle
        opportunistic / parallel: a poll that evaluates all 2P moves without taking one halves
            the radius

Opportunistic and parallel restart the poll after an accepted move (the seed's one-at-a-time
class reshuffles and returns at the first improvement). The loss is the head's decision loss
(`loss`: raw cross-entropy, or normalized by the full or span norm, `fewshot.heads.losses`).
The stop checks run before every poll (block), in the order fitted, radius, budget; "fitted"
(the stop) is 100% support accuracy, decision loss <= the band's upper edge when a `band` is
set and below `loss_threshold` when set, checked every `check_every` accepted moves
(`fewshot.heads.protocol`). A budget that runs out mid-poll stops the search without halving
the radius. With no band and no threshold this is the first-fit stop.

Normalized losses: a move changes the norm too. Full norm: ||theta||^2 + 2 s theta_p + s^2.
Span norm: sum_c z_c^T G^+ z_c (`losses.span_norm_sq`) with z_n -> z_n + s x_d changes by
2 s x_d . (G^+ z_n) + s^2 x_d^T G^+ x_d, O(S) from the kept G^+ Z and the precomputed
x_d^T G^+ x_d. Every logit is divided by the new norm, so a candidate's loss costs O(S N)
(`fewshot/heads/compass_norms.py`).

Fast path (raw loss): a move of parameter (d, n) by s changes only column n of the support logits, by
s * x_d (x_D = 1 for the bias), so a candidate costs O(S) instead of a forward pass O(S D N):
`move_loss` needs only the new column, the other columns' exp-sums `others[n]` and the
label-logit margin, kept per episode (`state_terms`), and the class sums T[d, n] of the
features (the label logits of class n rise by s * T[d, n]). All episodes evaluate a chunk of
their poll at once; each takes its first improving candidate in poll order, keeps that
column, and recomputes its terms and loss. A move along a feature that is 0 on every shot
changes nothing and is never taken (the seed's forward pass sees an exact tie there; the O(S)
formula could round either way). The trajectory (moves, evaluation counts, weights) is
exactly that of evaluating one candidate at a time with the same formulas:
`tests/fewshot/heads/test_pattern_search.py` holds that reference and checks it.

Poll orders are keyed random permutations: the t-th poll of an episode visits, at position j,
`poll_order(key, t, j)`, a Feistel bijection of [0, side^2) with side^2 >= 2P; positions that
land on a value >= 2P are skipped (not evaluated, not counted). The key comes from the
generator, one per episode; any position can be computed on its own, so a chunk costs
O(chunk) instead of a shuffle of all 2P moves, and an episode's trajectory depends neither on
the chunk size nor on the other episodes in the batch.

Example:
    >>> head = get_head("pattern_search", loss_threshold=0.1)
    >>> fit = head.fit(support, labels, n_way=5, generator=torch.Generator().manual_seed(0))
    >>> fit.stats["stop_reason"]    # 0 fitted, 1 radius below min_radius, 2 evaluation budget
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from fewshot.heads.base import HeadFit, HeadOptimizer, register_head
from fewshot.heads.common import validate_inputs
from fewshot.heads.compass import (SearchProblem, episode_keys, move_loss, poll_order, poll_side,
                                   prepare_problem, state_terms)
from fewshot.heads.head_model import ModelSettings, model_of, model_rules
from fewshot.heads.mlp_compass import search_network
from fewshot.heads.compass_norms import NormTerms, decision_loss, norm_terms, normalized_trials
from fewshot.heads.protocol import FitProtocol, fit_with_protocol, protocol_rules, reached_stop
from fewshot.heads.runtimes import RuntimeTracker
from fewshot.heads.starts import draw_start

FITTED, MIN_RADIUS, BUDGET = 0, 1, 2  # stop reason codes reported in stats["stop_reason"]
_MIN_ROUND_CHUNK = 4  # smallest adaptive chunk of an opportunistic round
@dataclass
class _Search:
    """The episodes still being searched (compacted as they stop); each field has rows [A]."""

    ids: torch.Tensor          # [A] index of each row in the input batch
    params: torch.Tensor       # [A, (D + 1) * N] weight rows then bias; parameter p = d * N + n
    logits: torch.Tensor       # [A, N, S]
    others: torch.Tensor       # [A, N, S] see `state_terms`
    shift: torch.Tensor        # [A, S]
    margin: torch.Tensor       # [A]
    loss: torch.Tensor         # [A]
    radius: torch.Tensor       # [A]
    keys: torch.Tensor         # [A]
    polls: torch.Tensor        # [A] polls started so far
    position: torch.Tensor     # [A] next position in the current poll
    polled: torch.Tensor       # [A] candidates evaluated in the current poll
    evaluations: torch.Tensor  # [A]
    accepted: torch.Tensor     # [A]
    reason: torch.Tensor       # [A] stop reason, -1 while running
    norm_sq: torch.Tensor      # [A] squared norm of the decision loss (1 for raw)
    span: torch.Tensor         # [A, N, S] G^+ z_n per column (span norm), else [A, 0, 0]

    def rows(self, index: torch.Tensor) -> "_Search":
        return _Search(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


@register_head("pattern_search")
class PatternSearchHead(HeadOptimizer):
    """Compass search on the support decision loss (see the module doc)."""

    @dataclass
    class Config(FitProtocol, ModelSettings):
        """Args (and those of `FitProtocol`: init, loss, band, check_every, on_failure; and of
        `ModelSettings`: model, width, depth; `model: mlp` runs `fewshot.heads.mlp_compass`):
            radius: initial step of every coordinate move.
            min_radius: stop once the radius (halved after each failed poll) falls below this.
            max_evaluations: budget of candidate evaluations per episode.
            loss_threshold: also require decision loss below this to stop as fitted; None
                and no band: the first-fit stop (the first 100%-accurate point checked).
            chunk_size: poll positions evaluated per episode at once (positions that map
                outside the 2P moves are skipped). Opportunistic: only speed and memory depend
                on it, never the result. Parallel and block: the block whose best move is taken
                (the seed's block of M - 1 candidates).
            variant: `opportunistic` (first improving move), `parallel` (best of a block, then a
                new poll) or `block` (best of each block, the seed's published variant).
        """

        radius: float = 1.0
        min_radius: float = 1e-4
        max_evaluations: int = 500_000
        loss_threshold: float | None = None
        chunk_size: int = 256
        variant: Literal["opportunistic", "parallel", "block"] = "opportunistic"

    def setting_rules(self) -> list[tuple[bool, str, str]]:
        c = self.config
        return [(c.radius > 0, "radius", "> 0"), (c.min_radius > 0, "min_radius", "> 0"),
                (c.max_evaluations >= 0, "max_evaluations", ">= 0"),
                (c.loss_threshold is None or c.loss_threshold > 0, "loss_threshold", "> 0 or null"),
                (c.chunk_size >= 1, "chunk_size", ">= 1"),
                (c.model == "linear" or c.variant != "block", "variant", "opportunistic or parallel with model: mlp")] \
            + protocol_rules(c) + model_rules(c)

    def on_accept(self, episodes: torch.Tensor, params: torch.Tensor, steps: torch.Tensor) -> None:
        """Called with the moves taken in each round (a hook for tests that record trajectories).

        Args:
            episodes: [K] batch index of each episode that moved.
            params: [K] the parameter each moved (p = d * N + n; d = D is the bias).
            steps: [K] the signed step taken.
        """

    def stop_reasons(self, s: _Search, labels: torch.Tensor, tracker: RuntimeTracker | None = None) -> torch.Tensor:
        """[A] stop reason of every row, -1 for those that poll on (checked before each poll).

        Args:
            s: the rows.
            labels: [A, S] their support labels.
            tracker: records the evaluations at which a row's point is first 100% accurate.
        """
        c = self.config
        n_way = s.logits.shape[1]
        # The rule of `linear_accuracy` (the argmax, first index on ties, is the label), on the
        # [A, N, S] layout, where a reduction over N is much faster with amax than argmax.
        first_wins = torch.arange(n_way, 0, -1, device=labels.device).view(1, -1, 1)
        first_max = n_way - ((s.logits == s.shift.unsqueeze(1)) * first_wins).amax(dim=1)
        accurate = (first_max == labels).all(dim=1)
        if tracker is not None:
            tracker.fitted_at(s.ids, torch.where(accurate, s.evaluations.double(), math.inf))
        fitted = reached_stop(accurate, s.loss, c, c.loss_threshold)
        fitted &= s.accepted % c.check_every == 0  # checked every `check_every` accepted moves
        reason = torch.where(s.evaluations >= c.max_evaluations, BUDGET, -1)
        reason = torch.where(s.radius < c.min_radius, MIN_RADIUS, reason)
        return torch.where(fitted, FITTED, reason)

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_way: int, *,
            generator: torch.Generator) -> HeadFit:
        validate_inputs(support, labels, n_way)
        return fit_with_protocol(lambda x, y, g: self._fit_once(x, y.long(), n_way, g), support, labels.long(),
                                 generator, self.config, self.config.loss_threshold)

    def _fit_once(self, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator) -> HeadFit:
        c = self.config
        if c.model != "linear":
            return search_network(self, model_of(c), support, labels, n_way, generator)
        episodes, shots, dim = support.shape
        device = support.device
        start = draw_start(c.init, c.init_scale, (episodes, dim + 1, n_way), generator, device, torch.float64)
        largest = float(start.abs().max()) if start.numel() else 0.0
        problem = prepare_problem(support, labels, n_way, c.radius + largest)
        dtype = problem.columns.dtype
        params = start.to(dtype).view(episodes, -1)
        logits = torch.bmm(start.to(dtype).transpose(1, 2),
                           problem.columns.view(episodes, dim + 1, shots))            # [E, N, S]
        others, shift, margin, loss = state_terms(logits, labels)
        norms = NormTerms.of(c.loss, problem, support)
        norm_sq, span = norm_terms(norms, torch.arange(episodes, device=device), params, logits)
        if c.loss != "raw":
            loss = decision_loss(logits, labels, norm_sq)
        count = torch.zeros(episodes, dtype=torch.long, device=device)
        search = _Search(
            ids=torch.arange(episodes, device=device), params=params,
            logits=logits, others=others, shift=shift, margin=margin, loss=loss,
            radius=torch.full((episodes,), c.radius, dtype=dtype, device=device),
            keys=episode_keys(episodes, generator, device), polls=count.clone(), position=count.clone(),
            polled=count.clone(), evaluations=count.clone(), accepted=count.clone(), reason=count - 1,
            norm_sq=norm_sq, span=span)
        results = search.rows(search.ids)
        tracker = RuntimeTracker(episodes, c.targets, device)  # the start reached what it reached at 0
        tracker.observe(search.ids, loss.unsqueeze(1), torch.ones_like(loss, dtype=torch.bool).unsqueeze(1), count - 1)
        chunk = min(c.chunk_size, _MIN_ROUND_CHUNK) if c.variant == "opportunistic" else c.chunk_size
        while True:
            search.reason = self.stop_reasons(search, labels[search.ids], tracker)
            running = search.reason < 0
            if running.sum() <= 0.75 * len(running):  # write stopped rows back and drop them
                stopped = ~running
                for f in dataclasses.fields(search):
                    getattr(results, f.name)[search.ids[stopped]] = getattr(search, f.name)[stopped]
                if not bool(running.any()):
                    break
                search, running = search.rows(running.nonzero().squeeze(1)), None
            moved = self._round(problem, norms, search, running, chunk, tracker)
            if c.variant == "opportunistic":  # adapt the round size; results never depend on it
                smallest = min(c.chunk_size, _MIN_ROUND_CHUNK)
                chunk = max(chunk // 2, smallest) if moved > 0.5 else min(chunk * 2, c.chunk_size)
        params = results.params.view(episodes, dim + 1, n_way)
        stats = {**tracker.stats(results.evaluations, (dim + 1) * n_way), "accepted": results.accepted,
                 "radius": results.radius, "stop_reason": results.reason, "support_loss": results.loss}
        params = params.to(support.dtype)
        return HeadFit(params[:, :dim].contiguous(), params[:, dim].contiguous(),
                       stats={name: value.float() for name, value in stats.items()})

    def _round(self, problem: SearchProblem, norms: NormTerms, s: _Search, running: torch.Tensor | None,
               chunk: int, tracker: RuntimeTracker) -> float:
        """Evaluate the next `chunk` positions of every running row's poll; apply the picks.

        Args:
            problem: the fixed inputs; norms: the fixed norm terms; s: the rows, updated in
                place; running: [A] rows still searching (None: all); chunk: poll positions per row;
                tracker: records the runtimes to the loss targets of the candidates counted.

        Returns the fraction of rows that accepted a move.
        """
        c = self.config
        dim, n_way, shots = problem.dim, problem.n_way, problem.shots
        size = 2 * (dim + 1) * n_way
        side = poll_side(size)
        rows = len(s.ids)
        positions = s.position.unsqueeze(1) + torch.arange(chunk, device=s.ids.device)
        candidate = poll_order(s.keys, s.polls, positions, side)                          # [A, C]
        real = (positions < side * side) & (candidate < size)
        seen = real.cumsum(dim=1)
        valid = real & (seen <= (c.max_evaluations - s.evaluations).unsqueeze(1))
        if running is not None:
            valid &= running.unsqueeze(1)
        candidate = candidate.clamp(max=size - 1)
        param = candidate >> 1
        step = torch.where((candidate & 1) == 1, -s.radius.unsqueeze(1), s.radius.unsqueeze(1))
        row, column = param // n_way, param % n_way
        # Gather the moved feature row, the old column and its other-columns terms: [A, C, S].
        feature_index = s.ids.unsqueeze(1) * (dim + 1) + row
        x = problem.columns.index_select(0, feature_index.view(-1)).view(rows, chunk, shots)
        column_index = (torch.arange(rows, device=s.ids.device).unsqueeze(1) * n_way + column).view(-1)
        old = s.logits.view(-1, shots).index_select(0, column_index).view(rows, chunk, shots)
        others = s.others.view(-1, shots).index_select(0, column_index).view(rows, chunk, shots)
        new = old + step.unsqueeze(2) * x
        margin = s.margin.unsqueeze(1) - step * problem.class_sums[feature_index * n_way + column]
        if norms.kind == "raw":
            trial_loss = move_loss(new, others, s.shift.unsqueeze(1), margin)             # [A, C]
        else:
            trial_loss = normalized_trials(norms, s.ids, s.params, s.logits, s.norm_sq, s.span, problem.labels[s.ids],
                                           param, column, step, x, new, feature_index)
        # A move along a feature that is 0 on every shot leaves the logits as they are: never
        # an improvement (the O(S) loss could round either way on such a tie). Under the full
        # norm it still changes the norm, so there it is a real move.
        better = valid & (trial_loss < s.loss.unsqueeze(1))
        if norms.kind != "full_norm":
            better &= ~problem.dead[feature_index]
        moved = better.any(dim=1)
        evaluated = valid.sum(dim=1)
        if c.variant == "opportunistic":
            pick = better.to(torch.uint8).argmax(dim=1)                 # first improving one
            evaluated = torch.where(moved, seen.gather(1, pick.unsqueeze(1)).squeeze(1), evaluated)
        else:
            pick = trial_loss.masked_fill(~better, math.inf).argmin(dim=1)
        # Counted: the valid positions up to the one taken (opportunistic), else all valid ones.
        tracker.observe(s.ids, trial_loss, valid & (seen <= evaluated.unsqueeze(1)), s.evaluations)
        s.evaluations += evaluated
        # Accepted: apply the move, keep its column, recompute the terms, start a new poll.
        won = moved.nonzero().squeeze(1)
        if won.numel():
            j = pick[won]
            s.params[won, param[won, j]] += step[won, j]
            s.logits[won, column[won, j]] = new[won, j]
            terms = state_terms(s.logits[won], problem.labels[s.ids[won]])
            s.others[won], s.shift[won], s.margin[won], s.loss[won] = terms
            if norms.kind != "raw":
                norm_sq, span = norm_terms(norms, s.ids[won], s.params[won], s.logits[won])
                s.norm_sq[won], s.span[won] = norm_sq, span
                s.loss[won] = decision_loss(s.logits[won], problem.labels[s.ids[won]], norm_sq)
            s.accepted[won] += 1
            self.on_accept(s.ids[won], param[won, j], step[won, j])
        if c.variant == "block":  # go on through the same order; its end halves the radius
            s.polled += evaluated
            s.position += chunk
            finished = s.polled >= size
            s.radius[finished] /= 2
            restart = finished
        else:  # not accepted: go on through the poll; a poll evaluated to its end halves the radius
            s.polled += torch.where(moved, 0, evaluated)
            s.position += torch.where(moved, 0, chunk)
            finished = s.polled >= size
            s.radius[finished] /= 2
            restart = moved | finished
        s.position[restart] = 0
        s.polled[restart] = 0
        s.polls += restart.long()
        return float(moved.float().mean())
