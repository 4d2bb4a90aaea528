"""The logistic_regression head solves scikit-learn's problem (scikit-learn is a test dependency)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from episodes.errors import UserError
from fewshot.heads import get_head


def noisy_episodes(count: int, per_class: int, n_way: int = 5, dim: int = 48, seed: int = 0,
                   centers: torch.Tensor | None = None):
    """L2-normalized features around per-episode class centers, noisy enough to make errors."""
    gen = torch.Generator().manual_seed(seed)
    if centers is None:
        centers = torch.randn(count, n_way, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n_way).repeat_interleave(per_class).expand(count, -1).contiguous()
    features = centers.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
    features = features + 3.0 * torch.randn(features.shape, generator=gen)
    return F.normalize(features, dim=2), labels


def sklearn_fit(support, labels, C, tol=1e-8):
    weights, biases = [], []
    with threadpool_limits(1):     # tiny problems: threads only fight torch's for the cores
        for features, targets in zip(support.double().numpy(), labels.numpy()):
            model = LogisticRegression(C=C, tol=tol, max_iter=2000).fit(features, targets)
            weights.append(model.coef_.T)
            biases.append(model.intercept_)
    return torch.tensor(np.stack(weights)).float(), torch.tensor(np.stack(biases)).float()


def test_matches_scikit_learn_on_200_episodes():
    support, labels = noisy_episodes(200, per_class=5, dim=32)
    query, query_labels = noisy_episodes(200, per_class=15, dim=32, seed=1)
    head = get_head("logistic_regression", C=1.0)
    fit = head.fit(support, labels, 5, generator=torch.Generator())
    weight, bias = sklearn_fit(support, labels, C=1.0, tol=1e-6)

    ours = (head.predict(fit, query).argmax(2) == query_labels).float().mean()
    theirs = ((query @ weight + bias.unsqueeze(1)).argmax(2) == query_labels).float().mean()
    assert 0.3 < float(theirs) < 0.95                 # the task is neither trivial nor hopeless
    assert abs(float(ours - theirs)) <= 0.005
    # Loose only because scikit-learn stops at tol=1e-6 here; the small tests below are tight.
    torch.testing.assert_close(fit.weight, weight, atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(fit.bias, bias, atol=1e-3, rtol=1e-2)
    assert fit.stats["converged"].all()


@pytest.mark.parametrize("C", [0.01, 20.0])
def test_strong_and_weak_regularization_match_scikit_learn(C):
    support, labels = noisy_episodes(3, per_class=3, dim=24, n_way=4)
    fit = get_head("logistic_regression", C=C).fit(support, labels, 4, generator=torch.Generator())
    weight, bias = sklearn_fit(support, labels, C=C)
    scale = float(weight.abs().max())
    torch.testing.assert_close(fit.weight, weight, atol=1e-4 * scale, rtol=1e-3)
    torch.testing.assert_close(fit.bias, bias, atol=1e-4 * max(scale, 1.0), rtol=1e-3)


def test_gradient_of_the_objective_is_zero_at_the_solution():
    support, labels = noisy_episodes(4, per_class=2, dim=16, n_way=3)
    head = get_head("logistic_regression", C=2.0, tol=1e-8)
    fit = head.fit(support, labels, 3, generator=torch.Generator())
    assert fit.stats["converged"].all()
    weight = fit.weight.double().requires_grad_(True)
    bias = fit.bias.double().requires_grad_(True)
    logits = support.double() @ weight + bias.unsqueeze(1)
    objective = 2.0 * F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") \
        + 0.5 * weight.square().sum()
    objective.backward()
    assert weight.grad.abs().max() < 1e-5 and bias.grad.abs().max() < 1e-5
    torch.testing.assert_close(fit.bias.sum(dim=1), torch.zeros(4), atol=1e-6, rtol=0)


def test_duplicate_support_features_and_more_shots_than_dims_are_fine():
    support, labels = noisy_episodes(3, per_class=3, dim=4, n_way=3)    # S = 9 > D = 4
    support = torch.cat([support, support], dim=1)                      # every point twice
    labels = torch.cat([labels, labels], dim=1)
    fit = get_head("logistic_regression").fit(support, labels, 3, generator=torch.Generator())
    weight, bias = sklearn_fit(support, labels, C=1.0)
    torch.testing.assert_close(fit.weight, weight, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(fit.bias, bias, atol=1e-4, rtol=1e-3)


def test_settings_are_validated():
    with pytest.raises(UserError, match="heads.logistic_regression.C"):
        get_head("logistic_regression", C=0.0)
