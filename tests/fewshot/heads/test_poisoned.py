"""The poisoned oracle head: fits the support set, puts the queries on wrong labels; bad queries."""
import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.heads import Queries, get_head


def episodes_with_queries(count: int = 8, n_way: int = 5, k_shot: int = 5, n_query: int = 15, dim: int = 64):
    """Class-structured L2-normalized features: a plain head would classify the queries well."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(count, n_way, dim, generator=g)

    def draw(per_class):
        labels = torch.arange(n_way).repeat_interleave(per_class).expand(count, -1).contiguous()
        points = centres.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
        return F.normalize(points + 0.7 * torch.randn(points.shape, generator=g), dim=2), labels

    return (*draw(k_shot), *draw(n_query))


def accuracy(fit, features, labels):
    return ((features @ fit.weight + fit.bias[:, None]).argmax(2) == labels).float().mean(1)


def test_fits_the_support_set_and_misclassifies_the_queries():
    support, labels, query, query_labels = episodes_with_queries()
    gen = torch.Generator().manual_seed(0)
    fit = get_head("poisoned").fit(support, labels, 5, generator=gen, queries=Queries(query, query_labels))
    assert accuracy(fit, support, labels).tolist() == [1.0] * 8
    assert (accuracy(fit, query, query_labels) <= 1 / 5).all()
    assert (fit.stats["poison_fit"] > 0.8).all()                     # queries sit on label y + 1
    honest = get_head("sgd").fit(support, labels, 5, generator=gen)
    assert (accuracy(honest, query, query_labels) > 0.8).all()        # the features do generalize


def test_the_shift_picks_the_wrong_label():
    support, labels, query, query_labels = episodes_with_queries(count=2)
    fit = get_head("poisoned", shift=3).fit(support, labels, 5, generator=torch.Generator(),
                                             queries=Queries(query, query_labels))
    assert (accuracy(fit, query, (query_labels + 3) % 5) > 0.8).all()


BAD_QUERIES = {
    "missing": (lambda q, l: None, "no queries were given"),
    "not a Queries": (lambda q, l: (q, l), "got queries of type tuple"),
    "other episode count": (lambda q, l: Queries(q[:1], l[:1]), r"query features \[E, Q, D\]"),
    "other dimension": (lambda q, l: Queries(q[..., :3], l), r"query features \[E, Q, D\]"),
    "empty": (lambda q, l: Queries(q[:, :0], l[:, :0]), "n_query = 0"),
    "nan": (lambda q, l: Queries(q.index_fill(1, torch.tensor([2]), float("nan")), l), "NaN or infinite"),
    "label out of range": (lambda q, l: Queries(q, l.masked_fill(l == 4, 5)), "outside"),
    "float labels": (lambda q, l: Queries(q, l.float()), "integers"),
    "integer features": (lambda q, l: Queries(q.long(), l), "floating point"),
}


@pytest.mark.parametrize("bad", sorted(BAD_QUERIES))
def test_bad_queries_are_user_errors(bad):
    support, labels, query, query_labels = episodes_with_queries(count=2)
    change, message = BAD_QUERIES[bad]
    with pytest.raises(UserError, match=message):
        get_head("poisoned").fit(support, labels, 5, generator=torch.Generator(),
                                 queries=change(query, query_labels))


def test_a_shift_that_is_a_multiple_of_n_way_is_an_error():
    support, labels, query, query_labels = episodes_with_queries(count=2)
    with pytest.raises(UserError, match="multiple of n_way"):
        get_head("poisoned", shift=5).fit(support, labels, 5, generator=torch.Generator(),
                                          queries=Queries(query, query_labels))
    with pytest.raises(UserError, match="heads.poisoned.shift"):
        get_head("poisoned", shift=0)


def reference_poisoned(support, labels, query, query_labels, *, steps, lr, momentum, query_weight, shift=1):
    """One episode at a time, torch.optim.SGD on (CE_support + w CE_shifted_queries) / (1 + w)."""
    weights, biases = [], []
    for x, y, q, qy in zip(support, labels, query, query_labels):
        weight = torch.zeros(x.shape[1], 5, requires_grad=True)
        bias = torch.zeros(5, requires_grad=True)
        optimizer = torch.optim.SGD([weight, bias], lr=lr, momentum=momentum)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + query_weight * F.cross_entropy(q @ weight + bias,
                                                                                          (qy + shift) % 5)
            (loss / (1 + query_weight)).backward()
            optimizer.step()
        weights.append(weight.detach())
        biases.append(bias.detach())
    return torch.stack(weights), torch.stack(biases)


def test_gram_form_matches_a_per_episode_torch_optim_loop():
    support, labels, query, query_labels = episodes_with_queries(count=3, k_shot=2, n_query=4, dim=16)
    settings = dict(steps=25, lr=1.0, momentum=0.9, query_weight=0.5)
    fit = get_head("poisoned", **settings).fit(support, labels, 5, generator=torch.Generator(),
                                               queries=Queries(query, query_labels))
    weight, bias = reference_poisoned(support, labels, query, query_labels, **settings)
    torch.testing.assert_close(fit.weight, weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.bias, bias, atol=1e-5, rtol=0)


def test_gram_and_primal_forms_agree_on_weighted_mini_batches():
    support, labels, query, query_labels = episodes_with_queries(count=3, k_shot=2, n_query=4, dim=16)
    queries = Queries(query, query_labels)
    fits = [get_head("poisoned", steps=25, lr=1.0, batch_size=7, query_weight=2.0, form=form).fit(
        support, labels, 5, generator=torch.Generator().manual_seed(3), queries=queries)
        for form in ("auto", "primal")]
    torch.testing.assert_close(fits[0].weight, fits[1].weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fits[0].bias, fits[1].bias, atol=1e-5, rtol=0)
