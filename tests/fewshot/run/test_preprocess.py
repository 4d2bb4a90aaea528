"""Per-episode centering and L2 normalization of features."""
import pytest
import torch

from episodes.errors import UserError
from fewshot.run.preprocess import preprocess


def features():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 5, generator=gen) + 2.0, torch.randn(3, 6, 5, generator=gen)


def test_none_without_centering_leaves_features_unchanged():
    support, query = features()
    new_support, new_query = preprocess(support, query, normalize="none", center=False)
    assert torch.equal(new_support, support) and torch.equal(new_query, query)


def test_l2_gives_unit_vectors_in_the_same_directions():
    support, query = features()
    new_support, new_query = preprocess(support, query, normalize="l2", center=False)
    torch.testing.assert_close(new_support.norm(dim=2), torch.ones(3, 4))
    torch.testing.assert_close(new_query.norm(dim=2), torch.ones(3, 6))
    torch.testing.assert_close(new_support * support.norm(dim=2, keepdim=True), support)


def test_centering_uses_each_episodes_support_mean_only():
    support, query = features()
    new_support, new_query = preprocess(support, query, normalize="none", center=True)
    torch.testing.assert_close(new_support.mean(dim=1), torch.zeros(3, 5), atol=1e-6, rtol=0)
    mean = support.mean(dim=1, keepdim=True)
    torch.testing.assert_close(new_query, query - mean)
    torch.testing.assert_close(new_query[1], query[1] - support[1].mean(dim=0))


def test_center_then_normalize_and_zero_vectors_stay_finite():
    support = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])          # centering makes both zero
    query = torch.tensor([[[4.0, 1.0]]])
    new_support, new_query = preprocess(support, query, normalize="l2", center=True)
    assert torch.equal(new_support, torch.zeros(1, 2, 2))
    torch.testing.assert_close(new_query, torch.tensor([[[1.0, 0.0]]]))


def test_bad_settings_and_shapes_are_user_errors():
    support, query = features()
    with pytest.raises(UserError, match="features.normalize"):
        preprocess(support, query, normalize="l1", center=False)
    with pytest.raises(UserError, match="same"):
        preprocess(support, query[:2], normalize="l2", center=False)
