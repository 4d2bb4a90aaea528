"""The max_margin head: exact row projection, scikit-learn's Crammer-Singer SVM, non-separable
support sets, and SGD's implicit bias toward its direction (seed 003)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.svm import LinearSVC

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.crammer_singer import project_rows


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def separable_episodes(count: int, n_way: int = 4, k_shot: int = 3, dim: int = 24, noise: float = 0.8,
                       seed: int = 0):
    """L2-normalized points around a random centre per class; S < D + 1, so separable."""
    g = gen(seed)
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(count, -1).contiguous()
    centres = torch.randn(count, n_way, dim, generator=g)
    features = centres.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
    return F.normalize(features + noise * torch.randn(features.shape, generator=g), dim=2), labels


def theta(weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """One episode's head as a flat vector (weight rows, then the bias row)."""
    return torch.cat([weight, bias[None]], 0).double().flatten().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def sklearn_head(features: torch.Tensor, labels: torch.Tensor, C: float) -> np.ndarray:
    """liblinear's Crammer-Singer SVM; its intercept is a weight on a constant 1 feature, as ours."""
    svc = LinearSVC(multi_class="crammer_singer", C=C, tol=1e-10, max_iter=500_000, fit_intercept=True,
                    intercept_scaling=1.0).fit(features.double().numpy(), labels.numpy())
    return np.concatenate([svc.coef_.T, svc.intercept_[None]], 0).flatten()


def bisection_projection(v: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """min(v - tau, upper) with sum 0, tau found by bisection: the slow truth."""
    low, high = -1e6, 1e6
    for _ in range(200):
        tau = (low + high) / 2
        low, high = (tau, high) if float(torch.minimum(v - tau, upper).sum()) > 0 else (low, tau)
    return torch.minimum(v - tau, upper)


@pytest.mark.parametrize("C", [0.5, 10.0, math.inf])
def test_row_projection_matches_bisection(C):
    values = 3 * torch.randn(100, 5, generator=gen(1), dtype=torch.float64)
    labels = torch.randint(0, 5, (100,), generator=gen(2))
    upper = torch.zeros(100, 5, dtype=torch.float64).index_put_((torch.arange(100), labels),
                                                                torch.tensor(C, dtype=torch.float64))
    projected = project_rows(values, upper)
    expected = torch.stack([bisection_projection(v, u) for v, u in zip(values, upper)])
    torch.testing.assert_close(projected, expected, atol=1e-9, rtol=0)
    assert (projected.sum(1).abs() < 1e-12).all() and (projected <= upper).all()


def test_hard_margin_matches_scikit_learn_crammer_singer():
    support, labels = separable_episodes(6)
    fit = get_head("max_margin").fit(support, labels, 4, generator=gen())
    assert fit.stats["hard_margin"].tolist() == [1.0] * 6
    assert (fit.stats["duality_gap"] <= 1e-7).all()
    logits = support @ fit.weight + fit.bias[:, None]
    true = logits.gather(2, labels[..., None]).squeeze(2)
    others = logits.scatter(2, labels[..., None], -math.inf).amax(2)
    assert ((true - others).amin(1) > 1 - 1e-3).all()          # every support point at margin >= 1
    for e in range(6):
        assert cosine(theta(fit.weight[e], fit.bias[e]), sklearn_head(support[e], labels[e], C=1e5)) > 0.999


def test_non_separable_support_falls_back_to_the_stated_soft_margin():
    support, labels = separable_episodes(3)
    # A copy of point 0 labelled with another class: no head separates them.
    support = torch.cat([support, support[:, :1]], dim=1)
    labels = torch.cat([labels, (labels[:, :1] + 1) % 4], dim=1)
    head = get_head("max_margin", C=2.0)
    fit = head.fit(support, labels, 4, generator=gen())
    assert fit.stats["hard_margin"].tolist() == [0.0] * 3
    assert (fit.stats["duality_gap"] <= 1e-7).all() and torch.isfinite(fit.weight).all()
    for e in range(3):
        assert cosine(theta(fit.weight[e], fit.bias[e]), sklearn_head(support[e], labels[e], C=2.0)) > 0.999


def test_rank_deficient_but_separable_support_still_gets_the_hard_margin():
    support, labels = separable_episodes(2)
    support = torch.cat([support, support[:, :1]], dim=1)          # a duplicate with its own label
    labels = torch.cat([labels, labels[:, :1]], dim=1)
    fit = get_head("max_margin", C=1e4).fit(support, labels, 4, generator=gen())
    assert fit.stats["hard_margin"].tolist() == [1.0, 1.0]
    reference = get_head("max_margin").fit(support[:, :-1], labels[:, :-1], 4, generator=gen())
    for e in range(2):
        assert cosine(theta(fit.weight[e], fit.bias[e]), theta(reference.weight[e], reference.bias[e])) > 0.9999


def test_sgd_without_regularization_turns_toward_the_max_margin_direction():
    support, labels = separable_episodes(4, n_way=3, k_shot=4, dim=16, noise=1.2, seed=3)
    target = get_head("max_margin").fit(support, labels, 3, generator=gen())
    cosines = []
    for steps in [10, 100, 1000, 3000]:
        fit = get_head("sgd", steps=steps, lr=1.0, momentum=0.9, weight_decay=0.0).fit(
            support, labels, 3, generator=gen())
        cosines.append([cosine(theta(fit.weight[e], fit.bias[e]), theta(target.weight[e], target.bias[e]))
                        for e in range(4)])
    cosines = np.array(cosines)                                    # [steps, episodes]
    assert (np.diff(cosines, axis=0) > 0).all(), cosines
    assert (cosines[-1] > 0.96).all(), cosines


@pytest.mark.parametrize("key, value", [("C", 0.0), ("tol", 0.0), ("max_iter", 0)])
def test_bad_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=f"heads.max_margin.{key}"):
        get_head("max_margin", **{key: value})
