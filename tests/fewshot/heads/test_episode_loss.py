"""The public episode loss against the straightforward per-candidate loss, and its protocol."""
from __future__ import annotations

import math

import pytest
import torch

from fewshot.heads.episode_loss import BUDGET, STOPPED, EpisodeLoss
from fewshot.heads.head_model import LinearModel, head_model
from fewshot.heads.losses import decision_loss
from fewshot.heads.protocol import FitProtocol
from fewshot.heads.runtimes import RuntimeTracker, merge_attempt
from tests.fewshot.heads.data import blobs


def test_linear_model_logits_match_the_straightforward_forward():
    support, _ = blobs(episodes=3, n_way=4, shots=2, dim=7, dtype=torch.float64)
    params = torch.randn(3, 5, LinearModel().n_params(7, 4), dtype=torch.float64)
    logits = head_model("linear").logits(params, support)
    for e in range(3):
        for k in range(5):
            grid = params[e, k].view(8, 4)
            assert torch.allclose(logits[e, k], support[e] @ grid[:7] + grid[7], atol=1e-12)
    fit = LinearModel().head_fit(params[:, 0], 7, 4, {})
    assert torch.allclose(LinearModel().predict(fit, support), logits[:, 0], atol=1e-12)


@pytest.mark.parametrize("kind", ["raw", "full_norm", "span_norm"])
def test_losses_equal_the_per_candidate_decision_loss(kind):
    support, labels = blobs(episodes=3, n_way=3, shots=3, dim=6, dtype=torch.float64)
    candidates = torch.randn(3, 4, 7 * 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = EpisodeLoss(support, labels, 3, protocol=FitProtocol(loss=kind), budget=100)
    values = loss(candidates)
    for k in range(4):
        grid = candidates[:, k].view(3, 7, 3)
        expected = decision_loss(kind, support, labels, grid[:, :6], grid[:, 6])
        assert torch.allclose(values[:, k], expected, rtol=1e-12, atol=1e-12)
    assert loss.evaluations.tolist() == [4, 4, 4]


def test_budget_counts_and_best_head_kept():
    support, labels = blobs(episodes=2, n_way=3, shots=2, dim=5)
    loss = EpisodeLoss(support, labels, 3, protocol=FitProtocol(targets=[1e-9]), budget=5, threshold=1e-12)
    first = torch.randn(2, 3, 18, generator=torch.Generator().manual_seed(0))
    values = loss(first)
    second = loss(torch.randn(2, 3, 18, generator=torch.Generator().manual_seed(1)))
    assert loss.evaluations.tolist() == [5, 5] and not bool(loss.active().any())
    assert torch.isinf(second[:, 2:]).all() and torch.isfinite(second[:, :2]).all()
    best = torch.cat([values, second[:, :2]], dim=1).min(dim=1).values
    assert torch.allclose(loss.best_loss, best)
    fit = loss.result()
    assert fit.stats["stop_reason"].tolist() == [BUDGET, BUDGET]
    assert fit.stats["runtimes"].isinf().all()


def test_stop_takes_the_first_candidate_that_meets_it_and_counts_to_it():
    support, labels = blobs(episodes=1, n_way=2, shots=2, dim=4, noise=0.0)
    grid = torch.zeros(1, 3, 5, 2)
    grid[0, 1, :4, 0], grid[0, 1, :4, 1] = support[0, 0], support[0, 2]   # fits: each class's own point
    grid[0, 2] = 2 * grid[0, 1]                                            # fits too, lower loss
    loss = EpisodeLoss(support, labels, 2, protocol=FitProtocol(targets=[10.0, 1e-6]), budget=10)
    values = loss(grid.flatten(2))
    fit = loss.result()
    assert bool(loss.stopped[0]) and fit.stats["stop_reason"].tolist() == [STOPPED]
    assert math.isclose(float(loss.best_loss[0]), float(values[0, 1]))
    assert fit.stats["evaluations_to_fit"].tolist() == [2.0] and fit.stats["runtimes"][0, 0] == 1.0
    assert torch.equal(fit.weight[0], grid[0, 1, :4])
    assert torch.isinf(loss(grid.flatten(2))).all() and loss.evaluations.tolist() == [3]


def test_check_every_checks_the_stop_on_every_kth_call_only():
    support, labels = blobs(episodes=1, n_way=2, shots=2, dim=4, noise=0.0)
    grid = torch.zeros(1, 1, 5, 2)
    grid[0, 0, :4, 0], grid[0, 0, :4, 1] = support[0, 0], support[0, 2]
    loss = EpisodeLoss(support, labels, 2, protocol=FitProtocol(check_every=2), budget=10)
    loss(torch.zeros(1, 1, 10))
    loss(grid.flatten(2))          # call 1: not checked
    assert not bool(loss.stopped[0])
    loss(grid.flatten(2))          # call 2: checked
    assert bool(loss.stopped[0])


def test_span_norm_refused_for_a_model_without_it():
    class NoSpan(LinearModel):
        supports_span_norm = False
    support, labels = blobs(episodes=1)
    with pytest.raises(Exception, match="span_norm"):
        EpisodeLoss(support, labels, 3, protocol=FitProtocol(loss="span_norm"), budget=1, model=NoSpan())


def test_runtime_tracker_against_a_loop_and_restarts_add_up():
    losses = torch.tensor([[3.0, 0.5, 0.05, 0.2]])
    counted = torch.tensor([[True, False, True, True]])
    tracker = RuntimeTracker(1, [1.0, 0.1, 0.01], "cpu")
    tracker.observe(torch.tensor([0]), losses, counted, torch.tensor([10]), counted & (losses < 1))
    # by hand: counted ordinals 11, -, 12, 13; loss <= 1 first at 12, <= 0.1 at 12, 0.01 never
    assert tracker.to_target.tolist() == [[12.0, 12.0, math.inf]] and tracker.to_fit.tolist() == [12.0]
    old = {"evaluations": torch.tensor([13.0]), "runtimes": tracker.to_target.float(),
           "evaluations_to_fit": torch.tensor([math.inf])}
    new = {"evaluations": torch.tensor([7.0]), "runtimes": torch.tensor([[1.0, 2.0, 5.0]]),
           "evaluations_to_fit": torch.tensor([4.0])}
    merged = merge_attempt(old, new)
    assert merged["evaluations"].tolist() == [20.0]
    assert merged["runtimes"].tolist() == [[12.0, 12.0, 18.0]] and merged["evaluations_to_fit"].tolist() == [17.0]


def test_thread_cap_and_whole_batch_path_change_no_value_and_restore_torch():
    support, labels = blobs(episodes=4, n_way=3, shots=3, dim=6, dtype=torch.float64)
    candidates = torch.randn(4, 5, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    capped = EpisodeLoss(support, labels, 3, protocol=FitProtocol(), budget=100)(candidates)
    assert torch.get_num_threads() == threads               # the cap is undone after the call
    free = EpisodeLoss(support, labels, 3, protocol=FitProtocol(), budget=100, threads=None)
    assert torch.equal(capped, free(candidates, torch.arange(4)))          # the whole batch, given as ids
    subset = EpisodeLoss(support, labels, 3, protocol=FitProtocol(), budget=100)
    assert torch.allclose(capped[[3, 1]], subset(candidates[[3, 1]], torch.tensor([3, 1])), rtol=1e-12, atol=0)
    assert subset.evaluations.tolist() == [0, 5, 0, 5]
