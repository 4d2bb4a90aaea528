"""pattern_search `variant: block` (the seed's published search) from random starts, with raw and
normalized losses, follows a plain one-candidate-at-a-time reference of the same block rule."""
from __future__ import annotations

import pytest
import torch

from fewshot.heads.common import linear_accuracy, linear_logits
from fewshot.heads.compass import episode_keys, poll_order, poll_side
from fewshot.heads.losses import decision_loss
from fewshot.heads.pattern_search import BUDGET, FITTED, MIN_RADIUS, PatternSearchHead
from fewshot.heads.protocol import reached_stop
from fewshot.heads.starts import draw_start
from tests.fewshot.heads.data import blobs
from tests.fewshot.heads.test_pattern_search import RecordingHead


def block_reference(c: PatternSearchHead.Config, support, labels, n_way, generator):
    """One episode, one candidate at a time: the loss of every candidate computed from scratch
    (`decision_loss` of the moved head); the best of each block of `chunk_size` positions of the
    keyed order taken if it beats the current point; the order's end halves the radius."""
    episodes, shots, dim = support.shape
    start = draw_start(c.init, c.init_scale, (episodes, dim + 1, n_way), generator, "cpu", torch.float64)
    keys = episode_keys(episodes, generator, "cpu")
    size = 2 * (dim + 1) * n_way
    side = poll_side(size)
    dead = torch.cat([(support == 0).all(dim=1), torch.zeros(episodes, 1, dtype=torch.bool)], dim=1)
    out = {"moves": [], "params": [], "evaluations": [], "accepted": [], "stop_reason": []}

    def loss_of(e, theta):
        return float(decision_loss(c.loss, support[e:e + 1], labels[e:e + 1], theta[None, :dim], theta[None, dim])[0])

    for e in range(episodes):
        theta = start[e].clone()
        loss = loss_of(e, theta)
        radius, poll, position, polled, evaluations, moves = c.radius, 0, 0, 0, 0, []
        while True:
            logits = linear_logits(support[e:e + 1], theta[None, :dim], theta[None, dim])
            accurate = linear_accuracy(logits, labels[e:e + 1]) == 1.0
            stop = reached_stop(accurate, torch.tensor([loss], dtype=torch.float64), c, c.loss_threshold)
            if bool(stop[0]) and len(moves) % c.check_every == 0:
                reason = FITTED
                break
            if radius < c.min_radius:
                reason = MIN_RADIUS
                break
            if evaluations >= c.max_evaluations:
                reason = BUDGET
                break
            order = poll_order(keys[e:e + 1], torch.tensor([poll]), torch.arange(side * side)[None], side)[0]
            best = None
            for p in range(position, position + c.chunk_size):
                if p >= side * side or int(order[p]) >= size or evaluations >= c.max_evaluations:
                    continue
                candidate = int(order[p])
                evaluations += 1
                polled += 1
                param, step = candidate >> 1, (-radius if candidate & 1 else radius)
                d, n = divmod(param, n_way)
                trial = theta.clone()
                trial[d, n] += step
                trial_loss = loss_of(e, trial)
                if trial_loss < loss and (c.loss == "full_norm" or not dead[e, d]) \
                        and (best is None or trial_loss < best[0]):
                    best = (trial_loss, param, step, trial)
            position += c.chunk_size
            if best is not None:
                theta = best[3]
                loss = loss_of(e, theta)
                moves.append((best[1], best[2]))
            if polled >= size:
                radius, poll, position, polled = radius / 2, poll + 1, 0, 0
        for name, value in [("moves", moves), ("params", theta), ("evaluations", evaluations),
                            ("accepted", len(moves)), ("stop_reason", reason)]:
            out[name].append(value)
    return out


@pytest.mark.parametrize("settings", [
    dict(loss="raw", init="zero", chunk_size=8, max_evaluations=600),
    dict(loss="raw", init="uniform", chunk_size=5, max_evaluations=500, check_every=3),
    dict(loss="span_norm", init="uniform", chunk_size=7, max_evaluations=700, band=[0.5, 0.9]),
    dict(loss="full_norm", init="gaussian", init_scale=0.5, chunk_size=6, max_evaluations=400, min_radius=0.3),
    dict(loss="span_norm", init="zero", chunk_size=9, max_evaluations=500, loss_threshold=0.95),
    # Features of norm 60: |logit| / norm is no longer small, exp is shifted by the class max.
    dict(loss="span_norm", init="uniform", chunk_size=7, max_evaluations=500, feature_scale=60.0),
])
def test_block_search_follows_the_one_at_a_time_reference(settings):
    settings = dict(settings)
    support, labels = blobs(episodes=4, n_way=3, shots=2, dim=6, noise=0.6, seed=3, dtype=torch.float64)
    support = support * settings.pop("feature_scale", 1.0)
    support[0, :, 2] = 0.0  # a dead feature: its moves are exact ties (and real moves under the full norm)
    config = PatternSearchHead.Config(variant="block", radius=0.5, **settings)
    head = RecordingHead(config)
    fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(11))
    slow = block_reference(config, support, labels, 3, torch.Generator().manual_seed(11))
    for episode, (fast, reference) in enumerate(zip(head.moves, slow["moves"])):
        assert [(p, pytest.approx(s)) for p, s in fast] == reference, f"episode {episode}: moves differ"
    params = torch.stack(slow["params"])
    torch.testing.assert_close(fit.weight, params[:, :6])
    torch.testing.assert_close(fit.bias, params[:, 6])
    for name in ("evaluations", "accepted", "stop_reason"):
        assert fit.stats[name].tolist() == [float(v) for v in slow[name]], name
    assert sum(slow["accepted"]) > 10  # the searches really moved
