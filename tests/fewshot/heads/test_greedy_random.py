"""greedy_random: fits easy support sets, keeps only improvements, is reproducible."""
from __future__ import annotations

import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_logits, linear_loss
from fewshot.heads.greedy_random import BUDGET, FITTED, MIN_SIGMA
from tests.fewshot.heads.data import blobs

def test_fits_easy_problems_to_full_support_accuracy():
    support, labels = blobs(episodes=20, n_way=3, shots=4, dim=16, noise=0.3, seed=0)
    fit = get_head("greedy_random").fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    logits = linear_logits(support, fit.weight, fit.bias)
    assert torch.all(fit.stats["stop_reason"] == FITTED)
    assert torch.all(linear_accuracy(logits, labels) == 1.0)
    # The reported loss is the loss of the returned head: only improvements were kept.
    assert fit.stats["support_loss"] == pytest.approx(linear_loss(logits, labels), abs=1e-5)
    assert torch.all(fit.stats["support_loss"] < torch.log(torch.tensor(3.0)))
    assert torch.all(fit.stats["accepted"] <= fit.stats["steps"])

def test_loss_threshold_runs_on_and_is_honoured():
    support, labels = blobs(episodes=10, n_way=3, shots=4, dim=16, noise=0.3, seed=1)
    fit = get_head("greedy_random", loss_threshold=0.3, sigma=0.5).fit(
        support, labels, 3, generator=torch.Generator().manual_seed(0))
    loss = linear_loss(linear_logits(support, fit.weight, fit.bias), labels)
    assert torch.all(fit.stats["stop_reason"] == FITTED)
    assert torch.all(loss < 0.3 + 1e-5)

def test_sigma_shrinks_after_patience_failures_then_min_sigma_or_budget_stops():
    # Two identical examples labelled 0 and 1: the zero head (equal logits) is the optimum,
    # so every step fails and sigma halves after each run of `patience` failures.
    support = torch.ones(3, 2, 4)
    labels = torch.tensor([[0, 1]]).expand(3, -1)
    generator = torch.Generator().manual_seed(0)
    # (min_sigma well above float32 noise: at sigma ~1e-4 a loss rise of ~1e-9 can round down.)
    fit = get_head("greedy_random", patience=5, shrink=0.5, sigma=1.0, min_sigma=0.01).fit(
        support, labels, 2, generator=generator)
    assert torch.all(fit.stats["stop_reason"] == MIN_SIGMA)
    assert torch.all(fit.stats["steps"] == 35)                    # 7 halvings: 1 / 128 < 0.01
    assert fit.stats["sigma"].tolist() == pytest.approx([1 / 128] * 3)
    assert torch.all(fit.stats["accepted"] == 0) and torch.all(fit.weight == 0)
    fit = get_head("greedy_random", patience=5, sigma=1.0, max_steps=20).fit(support, labels, 2,
                                                                           generator=generator)
    assert torch.all(fit.stats["stop_reason"] == BUDGET) and torch.all(fit.stats["steps"] == 20)
    assert fit.stats["sigma"].tolist() == pytest.approx([1 / 16] * 3)

def test_deterministic_given_the_generator():
    support, labels = blobs(episodes=6, n_way=3, shots=2, dim=8, noise=0.5, seed=3)
    head = get_head("greedy_random", candidates=3)
    first = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(5))
    again = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(5))
    other = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert not torch.equal(first.weight, other.weight)

def test_rejects_bad_settings():
    with pytest.raises(UserError, match="heads.greedy_random.shrink"):
        get_head("greedy_random", shrink=1.5)
