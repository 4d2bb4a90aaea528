"""Starts draw the documented distributions; normalized losses match direct computation."""
from __future__ import annotations

import math

import pytest
import torch

from fewshot.heads.losses import decision_loss, head_norm, span_gram_pinv
from fewshot.heads.starts import draw_start


def test_each_start_gives_its_distribution():
    generator = torch.Generator().manual_seed(0)
    shape = (200, 101, 5)
    assert not draw_start("zero", 3.0, shape, generator, "cpu").any()
    uniform = draw_start("uniform", 2.0, shape, generator, "cpu").double()
    assert float(uniform.min()) >= -2.0 and float(uniform.max()) <= 2.0
    # U[-a, a]: mean 0, variance a^2 / 3; n = 101000 draws, so 5 standard errors is tight.
    n = uniform.numel()
    assert abs(float(uniform.mean())) < 5 * math.sqrt(4 / 3 / n)
    assert abs(float(uniform.var()) - 4 / 3) < 5 * math.sqrt(4 / 3 * 4 / 3 * 0.8 / n)
    assert float(uniform.min()) < -1.99 and float(uniform.max()) > 1.99
    gaussian = draw_start("gaussian", 0.5, shape, generator, "cpu").double()
    assert abs(float(gaussian.mean())) < 5 * 0.5 / math.sqrt(n)
    assert abs(float(gaussian.std()) - 0.5) < 0.01
    kurtosis = float(((gaussian / gaussian.std()) ** 4).mean())
    assert abs(kurtosis - 3.0) < 0.15  # uniform has 1.8: tells the two apart


def test_starts_come_from_the_generator_only():
    first = draw_start("uniform", 1.0, (3, 4, 2), torch.Generator().manual_seed(5), "cpu")
    again = draw_start("uniform", 1.0, (3, 4, 2), torch.Generator().manual_seed(5), "cpu")
    other = draw_start("uniform", 1.0, (3, 4, 2), torch.Generator().manual_seed(6), "cpu")
    assert torch.equal(first, again) and not torch.equal(first, other)


def _episode(shots: int = 6, dim: int = 10, n_way: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    support = torch.randn(2, shots, dim, generator=generator, dtype=torch.float64)
    labels = torch.arange(n_way).repeat(shots // n_way + 1)[:shots].expand(2, -1).contiguous()
    weight = torch.randn(2, dim, n_way, generator=generator, dtype=torch.float64)
    bias = torch.randn(2, n_way, generator=generator, dtype=torch.float64)
    return support, labels, weight, bias


def _projected_norm(support: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Reference: project [W; b] onto the row space of [X, 1] with an orthonormal basis (SVD)."""
    norms = []
    for x, w, b in zip(support, weight, bias):
        features = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        _, values, vh = torch.linalg.svd(features, full_matrices=False)
        basis = vh[values > 1e-10 * values.max()]
        theta = torch.cat([w, b[None]], dim=0)
        norms.append((basis @ theta).norm())
    return torch.stack(norms)


@pytest.mark.parametrize("duplicate", [False, True])
def test_span_norm_is_the_norm_of_the_projected_head(duplicate):
    support, labels, weight, bias = _episode()
    if duplicate:  # a repeated shot makes the Gram singular: the pseudo-inverse handles it
        support[:, 1] = support[:, 0]
    span = head_norm("span_norm", support, weight, bias)
    torch.testing.assert_close(span, _projected_norm(support, weight, bias))
    full = head_norm("full_norm", support, weight, bias)
    torch.testing.assert_close(full, torch.cat([weight.flatten(1), bias], 1).norm(dim=1))
    assert bool((span <= full + 1e-12).all())


@pytest.mark.parametrize("kind", ["raw", "full_norm", "span_norm"])
def test_decision_losses_match_direct_cross_entropy(kind):
    support, labels, weight, bias = _episode()
    norm = {"raw": torch.ones(2, dtype=torch.float64),
            "full_norm": torch.cat([weight.flatten(1), bias], 1).norm(dim=1),
            "span_norm": _projected_norm(support, weight, bias)}[kind]
    expected = torch.stack([torch.nn.functional.cross_entropy((support[e] @ weight[e] + bias[e]) / norm[e], labels[e])
                            for e in range(2)])
    torch.testing.assert_close(decision_loss(kind, support, labels, weight, bias), expected)


def test_a_zero_head_has_normalized_loss_log_n_and_scaling_changes_nothing():
    support, labels, weight, bias = _episode()
    for kind in ("full_norm", "span_norm"):
        zero = decision_loss(kind, support, labels, torch.zeros_like(weight), torch.zeros_like(bias))
        torch.testing.assert_close(zero, torch.full((2,), math.log(3), dtype=torch.float64))
        torch.testing.assert_close(decision_loss(kind, support, labels, 7 * weight, 7 * bias),
                                   decision_loss(kind, support, labels, weight, bias))


def test_span_gram_pinv_is_symmetric_and_inverts_a_regular_gram():
    support, *_ = _episode(shots=6, dim=10)
    pinv = span_gram_pinv(support)
    features = torch.cat([support, torch.ones(2, 6, 1, dtype=torch.float64)], 2)
    gram = features @ features.transpose(1, 2)
    torch.testing.assert_close(pinv @ gram, torch.eye(6, dtype=torch.float64).expand(2, 6, 6))
