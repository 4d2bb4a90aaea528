"""Diagnostics of fitted heads on hand-made cases with known answers."""
import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.diagnostics import diagnose
from fewshot.heads import HeadFit, get_head


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def two_points():
    """Episode with x0 = (1, 0) of class 0 and x1 = (0, 1) of class 1."""
    return torch.eye(2).unsqueeze(0), torch.tensor([[0, 1]])


def test_zero_head_has_loss_log_n_and_no_margin_sharpness_or_asymmetry():
    support = torch.randn(2, 6, 4, generator=gen())
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    fit = HeadFit(torch.zeros(2, 4, 3), torch.zeros(2, 3))
    stats = diagnose(get_head("sgd"), fit, support, labels, generator=gen())
    torch.testing.assert_close(stats["support_loss"], torch.full((2,), math.log(3)))
    for name in ["weight_norm", "sparsity", "min_margin", "sharpness", "asymmetry"]:
        assert stats[name].tolist() == [0.0, 0.0], name
    assert set(stats) == {"support_loss", "support_accuracy", "weight_norm", "sparsity",
                          "min_margin", "sharpness", "asymmetry"}


def test_one_hot_head_sparsity_norm_and_margin():
    support, labels = two_points()
    weight = torch.tensor([[[3.0, 0.0], [0.0, 0.0]]])        # only class 0 has a weight
    stats = diagnose(get_head("sgd"), HeadFit(weight, torch.zeros(1, 2)), support, labels,
                     generator=gen())
    assert stats["sparsity"].tolist() == [0.25]              # 1 of 4 weights is non-zero
    assert stats["weight_norm"].tolist() == [3.0]
    # x0: 3 - 0 = 3; x1: 0 - 0 = 0 (a tie): the minimum margin is 0.
    assert stats["min_margin"].tolist() == [0.0]
    assert stats["support_accuracy"].tolist() == [0.5]       # argmax takes class 0 on the tie


def test_margin_of_a_separable_case_and_of_a_misclassification():
    support, labels = two_points()
    weight = 2 * torch.eye(2).unsqueeze(0)                    # logits 2 x
    bias = torch.tensor([[0.5, 0.0]])
    stats = diagnose(get_head("sgd"), HeadFit(weight, bias), support, labels, generator=gen())
    # x0: 2.5 - 0 = 2.5; x1: 2 - 0.5 = 1.5; ||W||_F = 2 sqrt 2
    torch.testing.assert_close(stats["min_margin"], torch.tensor([1.5 / (2 * math.sqrt(2))]))
    assert stats["support_accuracy"].tolist() == [1.0]
    wrong = diagnose(get_head("sgd"), HeadFit(-weight, bias), support, labels, generator=gen())
    assert wrong["min_margin"].item() < 0 and wrong["support_accuracy"].item() == 0.0


def test_sharpness_of_a_minimum_is_positive_and_grows_with_rho():
    support = torch.nn.functional.normalize(torch.randn(4, 9, 6, generator=gen(1)), dim=2)
    labels = torch.tensor([[0, 1, 2] * 3] * 4)
    head = get_head("logistic_regression", C=1.0)             # an exact regularized minimum
    fit = head.fit(support, labels, 3, generator=gen())
    small = diagnose(head, fit, support, labels, generator=gen(), rho=0.05)
    large = diagnose(head, fit, support, labels, generator=gen(), rho=0.2)
    assert (small["sharpness"] > 0).all()
    assert (large["sharpness"] > small["sharpness"]).all()
    assert ((small["asymmetry"] >= 0) & (small["asymmetry"] <= 1)).all()


def test_sharpness_and_asymmetry_match_a_direct_loop_over_directions():
    support = torch.randn(3, 6, 5, generator=gen(2))
    labels = torch.tensor([[0, 1, 0, 1, 0, 1]] * 3)
    fit = HeadFit(torch.randn(3, 5, 2, generator=gen(3)), torch.randn(3, 2, generator=gen(4)))
    head = get_head("sgd")
    stats = diagnose(head, fit, support, labels, generator=gen(5), rho=0.1, directions=4)

    def loss(weight, bias, e):
        return torch.nn.functional.cross_entropy(support[e] @ weight + bias, labels[e])

    noise = torch.randn(3, 4, 5 * 2 + 2, generator=gen(5))    # the same draw as diagnose's
    for e in range(3):
        theta = torch.cat([fit.weight[e].flatten(), fit.bias[e]])
        base = loss(fit.weight[e], fit.bias[e], e)
        rises, ratios = [], []
        for u in noise[e]:
            step = 0.1 * theta.norm() * u / u.norm()
            plus, minus = theta + step, theta - step
            up = loss(plus[:10].view(5, 2), plus[10:], e) - base
            down = loss(minus[:10].view(5, 2), minus[10:], e) - base
            rises += [up, down]
            ratios.append((up - down).abs() / (up.abs() + down.abs()))
        assert stats["sharpness"][e].item() == pytest.approx(torch.stack(rises).mean().item(), abs=1e-5)
        assert stats["asymmetry"][e].item() == pytest.approx(torch.stack(ratios).mean().item(), abs=1e-4)


def test_asymmetry_is_one_on_a_slope_and_zero_in_a_symmetric_valley():
    # Far from the boundary the loss is ~0 on one side and rises on the other: one-sided.
    support, labels = two_points()
    fit = HeadFit(torch.zeros(1, 2, 2), torch.tensor([[30.0, -30.0]]))
    head = get_head("sgd")
    stats = diagnose(head, fit, support, labels, generator=gen(), rho=0.5, directions=16)
    assert stats["asymmetry"].item() > 0.9
    # Two copies of one point with labels 0 and 1: equal logits are the minimum, and the loss
    # depends only on the logit difference d, symmetrically (-log s(d) - log s(-d)).
    support = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    valley = HeadFit(torch.ones(1, 2, 2), torch.ones(1, 2))
    stats = diagnose(head, valley, support, labels, generator=gen(), rho=0.3)
    assert stats["asymmetry"].item() < 1e-3
    assert stats["sharpness"].item() > 0


def test_cosine_prototype_is_diagnosed_through_its_own_predict():
    support = torch.randn(2, 6, 4, generator=gen(6)) * 5
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    head = get_head("prototype", metric="cosine")
    fit = head.fit(support, labels, 3, generator=gen())
    stats = diagnose(head, fit, support, labels, generator=gen())
    torch.testing.assert_close(stats["support_loss"], fit.stats["support_loss"])


def test_bad_settings_are_user_errors():
    support, labels = two_points()
    with pytest.raises(UserError, match="directions"):
        diagnose(get_head("sgd"), HeadFit(torch.zeros(1, 2, 2), torch.zeros(1, 2)), support,
                 labels, generator=gen(), directions=0)
