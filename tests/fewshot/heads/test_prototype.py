"""The prototype head is nearest class mean, written as a linear head."""
import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.prototype import class_means


def episodes(seed: int = 0, count: int = 20, n_way: int = 4, per_class: int = 3, dim: int = 10):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_way).repeat_interleave(per_class).expand(count, -1).contiguous()
    return torch.randn(count, n_way * per_class, dim, generator=gen) + 1.0, labels


def test_class_means_average_each_class():
    support = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]])
    labels = torch.tensor([[0, 0, 1]])
    assert class_means(support, labels, 2).tolist() == [[[2.0, 1.0], [0.0, 5.0]]]


def test_euclidean_logits_order_classes_like_squared_distances():
    support, labels = episodes()
    query, _ = episodes(seed=1, per_class=5)
    head = get_head("prototype")
    fit = head.fit(support, labels, 4, generator=torch.Generator())
    logits = head.predict(fit, query)
    distances = torch.cdist(query, class_means(support, labels, 4)).square()
    # -||x - mu||^2 = logit - ||x||^2 exactly, so decisions are nearest prototype.
    torch.testing.assert_close(logits - query.square().sum(2, keepdim=True), -distances,
                               atol=1e-4, rtol=1e-5)
    assert torch.equal(logits.argmax(2), distances.argmin(2))


def test_cosine_predictions_are_the_most_similar_prototype_at_any_feature_scale():
    support, labels = episodes()
    query, _ = episodes(seed=2, per_class=5)
    query = query * torch.rand(query.shape[:2] + (1,), generator=torch.Generator().manual_seed(3)) * 10
    head = get_head("prototype", metric="cosine", temperature=0.1)
    fit = head.fit(support, labels, 4, generator=torch.Generator())
    similarity = F.cosine_similarity(query.unsqueeze(2), class_means(support, labels, 4).unsqueeze(1),
                                     dim=3)
    torch.testing.assert_close(head.predict(fit, query), similarity / 0.1, atol=1e-4, rtol=1e-5)
    assert torch.equal(head.predict(fit, query).argmax(2), similarity.argmax(2))
    assert not fit.bias.any()


def test_support_loss_is_reported_and_temperature_must_be_positive():
    support, labels = episodes(count=3)
    fit = get_head("prototype").fit(support, labels, 4, generator=torch.Generator())
    assert fit.stats["support_loss"].shape == (3,)
    with pytest.raises(UserError, match="temperature"):
        get_head("prototype", temperature=0.0)
