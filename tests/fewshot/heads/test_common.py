"""Input checks and batched loss / accuracy shared by all heads."""
import math

import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.heads.common import (class_counts, linear_accuracy, linear_logits, linear_loss,
                                  log_sum_exp, softmax, validate_inputs)


def episodes(count: int = 3, n_way: int = 4, k_shot: int = 2, dim: int = 6):
    support = torch.randn(count, n_way * k_shot, dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(count, -1).clone()
    return support, labels


def test_valid_inputs_pass():
    support, labels = episodes()
    validate_inputs(support, labels, 4)


@pytest.mark.parametrize("change, message", [
    (lambda s, l: (s.index_fill(1, torch.tensor([3]), float("nan")), l), "NaN or infinite"),
    (lambda s, l: (s.index_fill(2, torch.tensor([0]), float("inf")), l), "NaN or infinite"),
    (lambda s, l: (s, l.masked_fill(l == 3, 4)), "outside"),
    (lambda s, l: (s, l.masked_fill(l == 3, -1)), "outside"),
    (lambda s, l: (s, l.masked_fill(l == 3, 2)), "Class 3 has no support example in episode 0"),
    (lambda s, l: (s[:, :-1], l), "do not match"),
    (lambda s, l: (s[0], l), "3 dims"),
    (lambda s, l: (s.long(), l), "floating point"),
    (lambda s, l: (s, l.float()), "must be integers"),
])
def test_bad_inputs_raise_user_errors_naming_the_problem(change, message):
    support, labels = change(*episodes())
    with pytest.raises(UserError, match=message):
        validate_inputs(support, labels, 4)


def test_bad_n_way_is_an_error():
    support, labels = episodes()
    with pytest.raises(UserError, match="n_way"):
        validate_inputs(support, labels, 0)


def test_class_counts_per_episode():
    labels = torch.tensor([[0, 0, 2], [1, 2, 2]])
    assert class_counts(labels, 3).tolist() == [[2, 0, 1], [0, 1, 2]]


def test_loss_and_accuracy_match_per_episode_torch():
    logits = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (5, 7), generator=torch.Generator().manual_seed(2))
    expected_loss = torch.stack([F.cross_entropy(logits[e], labels[e]) for e in range(5)])
    expected_accuracy = torch.stack([(logits[e].argmax(1) == labels[e]).float().mean() for e in range(5)])
    torch.testing.assert_close(linear_loss(logits, labels), expected_loss)
    torch.testing.assert_close(linear_accuracy(logits, labels), expected_accuracy)


def test_zero_logits_give_log_n_loss_and_extra_dims_broadcast():
    labels = torch.tensor([[0, 1, 2, 3]])
    loss = linear_loss(torch.zeros(1, 6, 4, 4), labels.unsqueeze(1))     # [E, M, S, N]
    assert loss.shape == (1, 6)
    torch.testing.assert_close(loss, torch.full((1, 6), math.log(4)))


def test_linear_logits_are_features_times_weight_plus_bias():
    features, weight, bias = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 5)
    expected = torch.stack([features[e] @ weight[e] + bias[e] for e in range(2)])
    torch.testing.assert_close(linear_logits(features, weight, bias), expected)


def test_softmax_and_log_sum_exp_match_torch_and_survive_large_logits():
    logits = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(3)) * 3
    logits[0, 0] = torch.tensor([1000.0, 999.0, -1000.0, 0.0, 1000.0])
    torch.testing.assert_close(softmax(logits), torch.softmax(logits, dim=-1))
    torch.testing.assert_close(log_sum_exp(logits), torch.logsumexp(logits, dim=-1, keepdim=True))
    assert torch.isfinite(linear_loss(logits, torch.zeros(4, 6, dtype=torch.long))).all()
