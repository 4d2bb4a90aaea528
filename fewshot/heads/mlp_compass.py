"""Compass search (`pattern_search`) on a network head (`model: mlp`), with incremental moves.

The poll, its keyed random order (`fewshot.heads.compass.poll_order`), the radius halving, the
budget and the stops are those of the linear search (`fewshot.heads.pattern_search`, variants
`opportunistic` and `parallel`); only a candidate's loss differs. The search keeps every
layer's pre-activations and the logits of the current point. A move of weight (i, j) of layer l
by s changes pre-activation column j of that layer by s * a_i (a the layer's input with a ones
column; i = fan_in is the bias), so:
- a read-out move changes one logit column: O(S);
- a move in the last hidden layer changes hidden unit j by delta = relu(new) - relu(old) and the
  logits by delta (x) W_next[j]: O(S * N);
- a move in the first of two hidden layers changes the second layer's pre-activations by
  delta (x) W2[j] (O(S * H)) and the logits by a forward pass of the small read-out.
A candidate never costs the first layer's O(S * D * H) forward pass, and neither does an
accepted move: the state is updated by the same arithmetic (`_State.accept`; float64 throughout),
and recomputed exactly by a full forward pass whenever an episode's radius halves, so rounding
cannot pile up over a radius level. The rounds are thousands of small ops: they run on one
intra-op thread (a second one only adds its wake-up latency, ~10x on a loaded 2-core machine).
`incremental=False` evaluates every candidate, and recomputes every accepted move, with a full
forward pass instead: the reference of the tests and bench/network_heads.py (same trajectory).

Example:
    >>> fit = search_network(head, model, support, labels, 5, generator)
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from fewshot.heads.common import linear_accuracy, linear_loss
from fewshot.heads.compass import episode_keys, poll_order, poll_side
from fewshot.heads.episode_loss import intra_op_threads
from fewshot.heads.losses import normalized_loss
from fewshot.heads.mlp_model import MLPModel, with_ones
from fewshot.heads.protocol import reached_stop
from fewshot.heads.runtimes import RuntimeTracker

FITTED, MIN_RADIUS, BUDGET = 0, 1, 2
_MIN_ROUND_CHUNK = 4


class _State:
    """The current point of every episode: params [E, P], pre-activations, logits, norms, loss (float64)."""

    def __init__(self, model: MLPModel, support: torch.Tensor, labels: torch.Tensor, n_way: int, params: torch.Tensor,
                 kind: str):
        self.model, self.labels, self.n_way, self.kind = model, labels, n_way, kind
        self.inputs = with_ones(support.double())                                     # [E, S, D + 1]
        self.dim = support.shape[2]
        self.params = params.double()
        self.pres: list[torch.Tensor] = []
        self.logits = self.inputs.new_zeros(0)
        self.layer_sq = self.inputs.new_zeros(0)
        self.loss = self.inputs.new_zeros(0)
        self.refresh(torch.arange(len(params), device=params.device), full=True)

    def layers(self, rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Layers [A, fan_in + 1, fan_out] of `rows` (None: views of all rows, nothing copied)."""
        layers = self.model.layers(self.params, self.dim, self.n_way)
        return layers if rows is None else [layer[rows] for layer in layers]

    def refresh(self, rows: torch.Tensor, full: bool = False) -> None:
        """Recompute the state of `rows` from their params (a full forward pass)."""
        pres, hidden = _forward(self.inputs[rows], self.layers(rows))
        layer_sq = self.model.layer_norms_sq(self.params[rows], self.dim, self.n_way)
        loss = self.loss_of(hidden, layer_sq.prod(-1), self.labels[rows])
        if full:
            self.pres, self.logits, self.layer_sq, self.loss = pres, hidden, layer_sq, loss
            return
        for kept, new in zip(self.pres, pres):
            kept[rows] = new
        self.logits[rows], self.layer_sq[rows], self.loss[rows] = hidden, layer_sq, loss

    def loss_of(self, logits: torch.Tensor, norm_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "raw":
            return linear_loss(logits, labels)
        return normalized_loss(logits, labels, norm_sq.sqrt())

    def move_losses(self, rows: torch.Tensor, param: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Losses [K] of moving parameter param[k] of episode rows[k] by step[k], incrementally.

        Only columns and small layers are gathered per candidate, never a first layer [D + 1, H].
        """
        out = torch.empty(len(rows), dtype=torch.float64, device=rows.device)
        last, views = len(self.model.shapes(self.dim, self.n_way)) - 1, self.layers()
        for index, pick, r, s, j, x in self._moves_by_layer(rows, param, step):
            if index == last:
                logits = self.logits[r].clone()
                logits[torch.arange(len(r), device=r.device), :, j] += s * x
            else:
                old = self.pres[index][r, :, j]
                delta = (old + s * x).relu() - old.relu()
                row = views[index + 1][r, j]                                               # [K, out]
                base = self.logits[r] if index + 1 == last else self.pres[index + 1][r]
                logits = base + delta.unsqueeze(2) * row.unsqueeze(1)
                for layer in views[index + 2:]:
                    grid = layer[r]
                    logits = torch.baddbmm(grid[:, -1:], logits.relu(), grid[:, :-1])
            layer_sq = self.layer_sq[r].clone()
            theta = self.params[r, param[pick]]
            layer_sq[:, index] = (layer_sq[:, index] + 2 * s.squeeze(1) * theta + s.squeeze(1) ** 2).clamp_min(0)
            out[pick] = self.loss_of(logits, layer_sq.prod(-1), self.labels[r])
        return out

    def _moves_by_layer(self, rows: torch.Tensor, param: torch.Tensor, step: torch.Tensor) -> Iterator[
            tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer with moves: (layer, positions [k] in the move list, their episodes, steps [k, 1],
        output units j [k], input columns [k, S]). Lazy, so a layer's columns are read after `accept`
        updated the layers before it."""
        ends, shapes, layer_of = self._locate(param)
        for index, (fan_in, fan_out) in enumerate(shapes):
            pick = (layer_of == index).nonzero().squeeze(1)
            if pick.numel() == 0:
                continue
            r = rows[pick]
            _, j, x = self._column(index, r, param[pick] - ends[index], fan_in, fan_out)
            yield index, pick, r, step[pick].unsqueeze(1), j, x

    def _locate(self, param: torch.Tensor) -> tuple[list[int], list[tuple[int, int]], torch.Tensor]:
        """(layer offsets, layer shapes, the layer [K] of each flat parameter index)."""
        ends = self.model.offsets(self.dim, self.n_way)
        layer_of = torch.bucketize(param, param.new_tensor(ends[1:-1]), right=True)
        return ends, self.model.shapes(self.dim, self.n_way), layer_of

    def _column(self, index: int, rows: torch.Tensor, local: torch.Tensor, fan_in: int,
                fan_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input unit i [K], output unit j [K], input column a_i [K, S]) of weights `local` of a layer."""
        i, j = local // fan_out, local % fan_out
        if index == 0:
            return i, j, self.inputs[rows, :, i]
        # the previous layer's unit i, or the ones column of the bias
        unit = self.pres[index - 1][rows, :, i.clamp(max=fan_in - 1)].relu()
        return i, j, torch.where((i == fan_in).unsqueeze(1), torch.ones_like(unit), unit)

    def accept(self, rows: torch.Tensor, param: torch.Tensor, step: torch.Tensor) -> None:
        """Move parameter param[k] of episode rows[k] (distinct) by step[k], updating the state in O(S * N)
        per move (O(S * H) in the first of two hidden layers) by the arithmetic of `move_losses`, so
        the new loss is the accepted candidate's. `refresh` clears the rounding this accumulates."""
        _, shapes, layer_of = self._locate(param)
        last, views = len(shapes) - 1, self.layers()
        theta = self.params[rows, param]
        self.layer_sq[rows, layer_of] = (self.layer_sq[rows, layer_of] + 2 * step * theta + step ** 2).clamp_min(0)
        self.params[rows, param] += step
        for index, _, r, s, j, x in self._moves_by_layer(rows, param, step):
            if index == last:
                self.logits[r, :, j] += s * x
                continue
            old = self.pres[index][r, :, j]
            new = old + s * x
            self.pres[index][r, :, j] = new
            change = ((new.relu() - old.relu()).unsqueeze(2) * views[index + 1][r, j].unsqueeze(1))
            if index + 1 == last:
                self.logits[r] += change
                continue
            self.pres[index + 1][r] += change
            hidden = self.pres[index + 1][r]
            for layer in views[index + 2:]:
                grid = layer[r]
                hidden = torch.baddbmm(grid[:, -1:], hidden.relu(), grid[:, :-1])
            self.logits[r] = hidden
        self.loss[rows] = self.loss_of(self.logits[rows], self.layer_sq[rows].prod(-1), self.labels[rows])

    def forward_losses(self, rows: torch.Tensor, param: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The same losses by a full forward pass of every candidate (the reference; the current
        point's loss comes from the same forward pass, so a move that changes nothing ties exactly)."""
        moved = self.params[rows].clone()
        moved[torch.arange(len(rows)), param] += step
        _, logits = _forward(self.inputs[rows], self.model.layers(moved, self.dim, self.n_way))
        norm_sq = self.model.layer_norms_sq(moved, self.dim, self.n_way).prod(-1)
        return self.loss_of(logits, norm_sq, self.labels[rows])


def _forward(inputs: torch.Tensor, layers: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(hidden pre-activations, logits) of inputs [A, S, D + 1] (ones column) through layers [A, in + 1, out]."""
    hidden, pres = inputs, []
    for index, layer in enumerate(layers):
        hidden = hidden @ layer if index == 0 else torch.baddbmm(layer[:, -1:], hidden.relu(), layer[:, :-1])
        if index < len(layers) - 1:
            pres.append(hidden)
    return pres, hidden


def search_network(head: Any, model: MLPModel, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                   generator: torch.Generator, incremental: bool = True) -> Any:
    """One compass search of the network heads of a batch from fresh starts (see the module doc).

    Args:
        head: the `PatternSearchHead` (its settings and its `on_accept` hook).
        model: the network; support [E, S, D]; labels [E, S] int64; n_way: classes.
        generator: draws the start and the poll keys.
        incremental: False evaluates each candidate with a full forward pass (the reference).
    """
    # The incremental rounds are thousands of small ops: a second intra-op thread only adds its wake-up
    # latency (milliseconds per op on a loaded 2-core machine), so they run on one thread.
    with intra_op_threads(1 if incremental and support.device.type == "cpu" else None):
        return _search(head, model, support, labels, n_way, generator, incremental)


def _search(head: Any, model: MLPModel, support: torch.Tensor, labels: torch.Tensor, n_way: int,
            generator: torch.Generator, incremental: bool) -> Any:
    """The search of `search_network` (same arguments)."""
    c = head.config
    episodes, _, dim = support.shape
    device = support.device
    start = model.draw_start(c.init, c.init_scale, episodes, dim, n_way, generator, device, torch.float64)
    state = _State(model, support, labels, n_way, start, c.loss)
    size = 2 * model.n_params(dim, n_way)
    side = poll_side(size)
    keys = episode_keys(episodes, generator, device)
    count = torch.zeros(episodes, dtype=torch.long, device=device)
    polls, position, polled, evaluations, accepted = (count.clone() for _ in range(5))
    radius = torch.full((episodes,), c.radius, dtype=torch.float64, device=device)
    reason = count - 1
    tracker = RuntimeTracker(episodes, c.targets, device)
    every = torch.arange(episodes, device=device)
    tracker.observe(every, state.loss.unsqueeze(1), torch.ones(episodes, 1, dtype=torch.bool, device=device), count - 1)
    evaluate = state.move_losses if incremental else state.forward_losses
    # Opportunistic rounds adapt their size (as the linear search's; the result never depends on it).
    smallest = min(c.chunk_size, _MIN_ROUND_CHUNK) if c.variant == "opportunistic" else c.chunk_size
    chunk = smallest
    while True:
        accurate = linear_accuracy(state.logits, labels) == 1.0
        tracker.fitted_at(every, torch.where(accurate & (reason < 0), evaluations.double(), math.inf))
        fitted = reached_stop(accurate, state.loss, c, c.loss_threshold) & (accepted % c.check_every == 0)
        stop = torch.where(evaluations >= c.max_evaluations, BUDGET, -1)
        stop = torch.where(radius < c.min_radius, MIN_RADIUS, stop)
        reason = torch.where(reason < 0, torch.where(fitted, FITTED, stop), reason)
        live = (reason < 0).nonzero().squeeze(1)
        if live.numel() == 0:
            break
        positions = position[live].unsqueeze(1) + torch.arange(chunk, device=device)
        candidate = poll_order(keys[live], polls[live], positions, side)
        real = (positions < side * side) & (candidate < size)
        seen = real.cumsum(dim=1)
        valid = real & (seen <= (c.max_evaluations - evaluations[live]).unsqueeze(1))
        candidate = candidate.clamp(max=size - 1)
        param = candidate >> 1
        step = torch.where((candidate & 1) == 1, -radius[live].unsqueeze(1), radius[live].unsqueeze(1))
        trial = torch.full(valid.shape, math.inf, dtype=torch.float64, device=device)
        at = valid.nonzero()
        if at.numel():
            trial[at[:, 0], at[:, 1]] = evaluate(live[at[:, 0]], param[at[:, 0], at[:, 1]], step[at[:, 0], at[:, 1]])
        better = valid & (trial < state.loss[live].unsqueeze(1))
        moved = better.any(dim=1)
        counted = valid.sum(dim=1)
        if c.variant == "opportunistic":
            pick = better.to(torch.uint8).argmax(dim=1)
            counted = torch.where(moved, seen.gather(1, pick.unsqueeze(1)).squeeze(1), counted)
        else:
            pick = trial.masked_fill(~better, math.inf).argmin(dim=1)
        tracker.observe(live, trial, valid & (seen <= counted.unsqueeze(1)), evaluations[live])
        evaluations[live] += counted
        won = moved.nonzero().squeeze(1)
        if won.numel():
            rows, taken, signed = live[won], param[won, pick[won]], step[won, pick[won]]
            if incremental:
                state.accept(rows, taken, signed)
            else:
                state.params[rows, taken] += signed
                state.refresh(rows)
            accepted[rows] += 1
            head.on_accept(rows, taken, signed)
        polled[live] += torch.where(moved, 0, counted)
        position[live] += torch.where(moved, 0, chunk)
        finished = polled[live] >= size
        radius[live[finished]] /= 2
        if incremental and bool(finished.any()):     # an exact state at every new radius: no drift
            state.refresh(live[finished])
        restart = live[moved | finished]
        position[restart], polled[restart] = 0, 0
        polls[restart] += 1
        if c.variant == "opportunistic":
            chunk = max(chunk // 2, smallest) if float(moved.float().mean()) > 0.5 else min(chunk * 2, c.chunk_size)
    stats = {**tracker.stats(evaluations, model.n_params(dim, n_way)), "accepted": accepted, "radius": radius,
             "stop_reason": reason, "support_loss": state.loss}
    return model.head_fit(state.params.to(support.dtype), dim, n_way,
                          {name: value.float() for name, value in stats.items()})
