"""pattern_search: the batched, chunked fast path follows exactly the one-at-a-time algorithm."""
from __future__ import annotations

import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_logits, linear_loss
from fewshot.heads.compass import episode_keys, move_loss, poll_order, poll_side, prepare_problem, state_terms
from fewshot.heads.pattern_search import BUDGET, FITTED, MIN_RADIUS, PatternSearchHead
from tests.fewshot.heads.data import blobs


def reference_fit(head: PatternSearchHead, support: torch.Tensor, labels: torch.Tensor, n_way: int,
                  generator: torch.Generator):
    """The slow algorithm: one episode, one poll, one candidate at a time.

    It shares with the head only the definitions: the problem layout, the poll orders and the
    loss of a move (`move_loss` of the new column, `state_terms` of a point). The search loop
    is written out plainly: a fresh poll after every accepted move, the radius halved after a
    poll without one, a move along an all-zero feature never an improvement.
    Returns (moves per episode as (param, step) lists, params [E, P], stats dict of lists).
    """
    c = head.config
    problem = prepare_problem(support, labels, n_way, c.radius)
    episodes, shots, dim = support.shape
    size, side = 2 * (dim + 1) * n_way, poll_side(2 * (dim + 1) * n_way)
    keys = episode_keys(episodes, generator, support.device)
    columns = problem.columns.view(episodes, dim + 1, shots)
    class_sums = problem.class_sums.view(episodes, dim + 1, n_way)
    dead = problem.dead.view(episodes, dim + 1)
    moves, all_params = [], []
    stats = {"evaluations": [], "accepted": [], "radius": [], "stop_reason": [], "support_loss": []}
    for e in range(episodes):
        y = labels[e]
        logits = torch.zeros(n_way, shots, dtype=problem.columns.dtype)
        others, shift, margin, loss = state_terms(logits, y)
        params = torch.zeros((dim + 1) * n_way, dtype=logits.dtype)
        radius = torch.tensor(c.radius, dtype=logits.dtype)
        evaluations, poll, taken = 0, 0, []
        while True:
            fitted = bool(linear_accuracy(logits.T[None], y[None])[0] == 1.0)
            if fitted and (c.loss_threshold is None or bool(loss < c.loss_threshold)):
                reason = FITTED
                break
            if bool(radius < c.min_radius):
                reason = MIN_RADIUS
                break
            if evaluations >= c.max_evaluations:
                reason = BUDGET
                break
            order = poll_order(keys[e:e + 1], torch.tensor([poll]), torch.arange(side * side)[None], side)[0]
            poll += 1
            best, completed = None, True
            for position, candidate in enumerate(order.tolist()):
                if candidate < size:
                    if evaluations >= c.max_evaluations:
                        completed = False
                        break
                    evaluations += 1
                    param, sign = candidate >> 1, candidate & 1
                    d, n = divmod(param, n_way)
                    step = -radius if sign else radius
                    new = logits[n] + step * columns[e, d]
                    trial = move_loss(new, others[n], shift, margin - step * class_sums[e, d, n])
                    if bool(trial < loss) and not dead[e, d] and (best is None or bool(trial < best[0])):
                        best = (trial, param, step, n, new)
                    if best is not None and c.variant == "opportunistic":
                        break
                if best is not None and (position + 1) % c.chunk_size == 0:  # end of a parallel block
                    break
            if best is not None:
                _, param, step, n, new = best
                logits[n] = new
                others, shift, margin, loss = state_terms(logits, y)
                params[param] += step
                taken.append((param, float(step)))
            elif completed:
                radius = radius / 2
        moves.append(taken)
        all_params.append(params)
        for name, value in [("evaluations", evaluations), ("accepted", len(taken)), ("radius", float(radius)),
                            ("stop_reason", reason), ("support_loss", float(loss))]:
            stats[name].append(value)
    return moves, torch.stack(all_params), stats


class RecordingHead(PatternSearchHead):
    """Records the accepted moves of the fast path, per episode, in order."""

    def fit(self, support, labels, n_way, *, generator):
        self.moves = [[] for _ in range(support.shape[0])]
        return super().fit(support, labels, n_way, generator=generator)

    def on_accept(self, episodes, params, steps):
        for episode, param, step in zip(episodes.tolist(), params.tolist(), steps.tolist()):
            self.moves[episode].append((param, step))


def assert_same_trajectory(config: dict, support, labels, n_way: int, seed: int = 0) -> None:
    head = RecordingHead(PatternSearchHead.Config(**config))
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(seed))
    moves, params, stats = reference_fit(head, support, labels, n_way, torch.Generator().manual_seed(seed))
    for episode, (fast, slow) in enumerate(zip(head.moves, moves)):
        assert fast == slow, f"episode {episode}: the accepted moves differ"
    dim = support.shape[2]
    expected = params.view(-1, dim + 1, n_way)
    assert torch.equal(fit.weight, expected[:, :dim].float())
    assert torch.equal(fit.bias, expected[:, dim].float())
    for name, values in stats.items():
        assert fit.stats[name].tolist() == pytest.approx(values, rel=0, abs=0), name


@pytest.mark.parametrize("config", [
    dict(),                                                   # seed rule: stop at 100% accuracy
    dict(loss_threshold=0.2, chunk_size=7),                   # runs on; odd chunk sizes
    dict(loss_threshold=0.05, chunk_size=64),
    dict(max_evaluations=150, loss_threshold=0.01),           # budget runs out mid-poll
    dict(min_radius=0.3, loss_threshold=0.01, chunk_size=3),  # radius halves down to the floor
    dict(variant="parallel", chunk_size=5, loss_threshold=0.2),
])
def test_fast_path_follows_the_one_at_a_time_algorithm(config):
    support, labels = blobs(episodes=6, n_way=3, shots=2, dim=6, noise=0.8, seed=1)
    assert_same_trajectory(config, support, labels, n_way=3)


def test_trajectory_holds_on_harder_problems_with_zero_features():
    # Overlapping classes and exactly-zero feature dimensions (like ReLU features): candidate
    # losses tie with the current one, and a tie must never count as an improvement.
    support, labels = blobs(episodes=5, n_way=4, shots=3, dim=8, noise=2.0, seed=2)
    support = torch.relu(support)
    support[:, :, :2] = 0.0
    config = dict(loss_threshold=0.3, chunk_size=16, max_evaluations=3000)
    assert_same_trajectory(config, support, labels, n_way=4)
    head = RecordingHead(**config)
    head.fit(support, labels, 4, generator=torch.Generator().manual_seed(0))
    moved_rows = {param // 4 for moves in head.moves for param, _ in moves}
    assert not moved_rows & {0, 1}, "moves along all-zero features change nothing and must be refused"


def test_chunk_size_does_not_change_the_result():
    support, labels = blobs(episodes=8, n_way=5, shots=2, dim=12, noise=1.0, seed=3)
    fits = [get_head("pattern_search", loss_threshold=0.1, chunk_size=size).fit(
        support, labels, 5, generator=torch.Generator().manual_seed(4)) for size in (1, 16, 512)]
    for other in fits[1:]:
        assert torch.equal(other.weight, fits[0].weight) and torch.equal(other.bias, fits[0].bias)
        assert torch.equal(other.stats["evaluations"], fits[0].stats["evaluations"])


def test_default_stops_at_full_support_accuracy_with_sparse_weights():
    support, labels = blobs(episodes=10, n_way=5, shots=5, dim=64, noise=0.5, seed=5)
    fit = get_head("pattern_search").fit(support, labels, 5, generator=torch.Generator().manual_seed(0))
    logits = linear_logits(support, fit.weight, fit.bias)
    assert torch.all(linear_accuracy(logits, labels) == 1.0)
    assert torch.all(fit.stats["stop_reason"] == FITTED)
    assert torch.all(fit.stats["radius"] == 1.0)   # fitted long before a poll failed
    assert fit.stats["support_loss"] == pytest.approx(linear_loss(logits, labels), abs=1e-5)
    assert (fit.weight != 0).float().mean() < 0.2  # untouched weights stay exactly zero


def test_loss_threshold_is_honoured():
    support, labels = blobs(episodes=10, n_way=5, shots=5, dim=64, noise=0.5, seed=5)
    generator = torch.Generator().manual_seed(0)
    fit = get_head("pattern_search", loss_threshold=0.1).fit(support, labels, 5, generator=generator)
    loss = linear_loss(linear_logits(support, fit.weight, fit.bias), labels)
    assert torch.all(fit.stats["stop_reason"] == FITTED)
    assert torch.all(loss < 0.1 + 1e-5)
    default = get_head("pattern_search").fit(support, labels, 5, generator=torch.Generator().manual_seed(0))
    assert torch.all(fit.stats["evaluations"] > default.stats["evaluations"])


def test_deterministic_given_the_generator_and_independent_of_batch_company():
    support, labels = blobs(episodes=6, n_way=3, shots=3, dim=10, noise=1.0, seed=6)
    head = get_head("pattern_search", loss_threshold=0.2)
    first = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(9))
    again = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(9))
    other = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(10))
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert not torch.equal(first.weight, other.weight)


def test_poll_order_is_a_permutation_that_changes_every_poll():
    size = 2 * 7 * 3
    side = poll_side(size)
    keys = torch.tensor([5, 5, 123456])
    polls = torch.tensor([0, 1, 0])
    order = poll_order(keys, polls, torch.arange(side * side).expand(3, -1), side)
    for row in order:
        assert sorted(row.tolist()) == list(range(side * side))
    visited = [[v for v in row.tolist() if v < size] for row in order]
    assert visited[0] != visited[1] and visited[0] != visited[2]
    # Over many polls the first move is spread over all candidates, not stuck on a few.
    start = torch.zeros(4000, 1, dtype=torch.long)
    many = poll_order(torch.full((4000,), 77), torch.arange(4000), start, side)
    first = many[many < size]
    assert len(set(first.tolist())) == size


def test_move_loss_is_the_cross_entropy_and_sums_the_same_in_any_batch_shape():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(40, 4, 9, generator=generator)            # [A, N, S]
    labels = torch.randint(0, 4, (40, 9), generator=generator)
    others, shift, margin, loss = state_terms(logits, labels)
    assert loss == pytest.approx(linear_loss(logits.transpose(1, 2), labels), abs=1e-5)
    column = logits[:, 2] + 0.5 * torch.randn(40, 9, generator=generator)
    moved = logits.clone()
    moved[:, 2] = column
    expected = linear_loss(moved.transpose(1, 2), labels)
    margin_after = margin - (column - logits[:, 2]).where(labels == 2, 0.0).sum(dim=1)
    trial = move_loss(column, others[:, 2], shift, margin_after)
    assert trial == pytest.approx(expected, abs=1e-5)
    for row in (0, 17, 39):  # the fast path evaluates in batches, the reference one at a time
        single = state_terms(logits[row], labels[row])
        for batched, alone in zip((others, shift, margin, loss), single):
            assert torch.equal(batched[row], alone)
        assert torch.equal(move_loss(column[row], others[row, 2], shift[row], margin_after[row]), trial[row])


def test_rejects_bad_settings():
    with pytest.raises(UserError, match="heads.pattern_search.radius"):
        get_head("pattern_search", radius=0.0)
    with pytest.raises(UserError, match="variant"):
        get_head("pattern_search", variant="greedy")
