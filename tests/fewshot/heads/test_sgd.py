"""The sgd head: the Gram (dual) form equals the primal form and a plain torch.optim loop."""
import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.heads import get_head


def class_structured_episodes(count: int, n_way: int = 3, k_shot: int = 4, dim: int = 32,
                              noise: float = 0.3, seed: int = 0):
    """L2-normalized features scattered around one random direction per class."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_way).repeat_interleave(k_shot).expand(count, -1).contiguous()
    centers = torch.randn(count, n_way, dim, generator=gen)
    features = centers.gather(1, labels.unsqueeze(2).expand(-1, -1, dim))
    features = features + noise * torch.randn(features.shape, generator=gen)
    return F.normalize(features, dim=2), labels


def reference_sgd(support, labels, n_way, *, steps, lr, momentum, weight_decay, bias=True):
    """One episode at a time with torch.optim.SGD (weight decayed, bias not): the slow truth."""
    weights, biases = [], []
    for features, targets in zip(support, labels):
        weight = torch.zeros(features.shape[1], n_way, requires_grad=True)
        offset = torch.zeros(n_way, requires_grad=bias)
        groups = [{"params": [weight], "weight_decay": weight_decay}]
        if bias:
            groups.append({"params": [offset], "weight_decay": 0.0})
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum)
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(features @ weight + offset, targets).backward()
            optimizer.step()
        weights.append(weight.detach())
        biases.append(offset.detach())
    return torch.stack(weights), torch.stack(biases)


SETTINGS = dict(steps=40, lr=0.5, momentum=0.9, weight_decay=5e-3)


@pytest.mark.parametrize("bias", [True, False])
def test_dual_form_matches_a_per_episode_torch_optim_loop(bias):
    support, labels = class_structured_episodes(6)
    head = get_head("sgd", bias=bias, **SETTINGS)
    assert head.uses_dual_form
    fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    weight, offset = reference_sgd(support, labels, 3, bias=bias, **SETTINGS)
    torch.testing.assert_close(fit.weight, weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.bias, offset, atol=1e-5, rtol=0)
    assert fit.weight.shape == (6, 32, 3) and fit.bias.shape == (6, 3)
    assert fit.stats["steps"].tolist() == [40.0] * 6
    assert (fit.stats["support_loss"] < 0.5).all()      # it actually learned the support set


@pytest.mark.parametrize("batch_size", [0, 5])
def test_dual_and_primal_forms_give_the_same_weights(batch_size):
    support, labels = class_structured_episodes(5)
    dual = get_head("sgd", batch_size=batch_size, **SETTINGS)
    primal = get_head("sgd", batch_size=batch_size, form="primal", **SETTINGS)
    assert not primal.uses_dual_form
    fit_dual = dual.fit(support, labels, 3, generator=torch.Generator().manual_seed(3))
    fit_primal = primal.fit(support, labels, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fit_dual.weight, fit_primal.weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit_dual.bias, fit_primal.bias, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit_dual.stats["support_loss"], fit_primal.stats["support_loss"],
                               atol=1e-5, rtol=0)


def test_mini_batches_depend_on_the_generator_and_are_reproducible():
    support, labels = class_structured_episodes(4)
    head = get_head("sgd", batch_size=4, steps=10)
    first = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(1))
    again = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(1))
    other = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first.weight, again.weight)
    assert not torch.equal(first.weight, other.weight)


def test_adam_uses_the_primal_form_and_random_starts_fit_the_support_set():
    support, labels = class_structured_episodes(4)
    for settings in [dict(optimizer="adam", lr=0.05), dict(init="uniform", init_scale=0.05)]:
        head = get_head("sgd", steps=60, **settings)
        assert head.uses_dual_form == (settings.get("optimizer") != "adam")
        fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
        again = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
        assert torch.equal(fit.weight, again.weight)
        logits = head.predict(fit, support)
        assert (logits.argmax(2) == labels).all()
        assert (fit.stats["support_loss"] < 0.5).all()


def test_random_init_leaves_the_span_of_the_support_features():
    support, labels = class_structured_episodes(2, dim=32)
    fit = get_head("sgd", init="uniform", init_scale=0.05, steps=5).fit(support, labels, 3,
                                                       generator=torch.Generator().manual_seed(0))
    # The component of W orthogonal to the 12 support features is the (decayed) random start.
    basis, _ = torch.linalg.qr(support.transpose(1, 2))
    outside = fit.weight - basis @ (basis.transpose(1, 2) @ fit.weight)
    assert outside.norm() > 0.1


def test_zero_steps_give_a_zero_head_with_loss_log_n():
    support, labels = class_structured_episodes(2)
    fit = get_head("sgd", steps=0).fit(support, labels, 3, generator=torch.Generator())
    assert not fit.weight.any() and not fit.bias.any()
    torch.testing.assert_close(fit.stats["support_loss"], torch.log(torch.tensor([3.0, 3.0])))


@pytest.mark.parametrize("key, value", [("lr", 0.0), ("momentum", 1.0), ("steps", -1),
                                        ("weight_decay", -0.1), ("batch_size", -2)])
def test_out_of_range_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=f"heads.sgd.{key}"):
        get_head("sgd", **{key: value})


def test_cost_in_forward_backward_evaluations_counts_batches_and_restarts():
    support, labels = class_structured_episodes(4)                      # 12 support points
    full = get_head("sgd", steps=30, band=[0.0, 0.7]).fit(support, labels, 3, generator=torch.Generator())
    assert (full.stats["steps"] < 30).any()                              # some stopped early at the band
    assert torch.equal(full.stats["forward_backward_evaluations"], full.stats["steps"])
    mini = get_head("sgd", steps=10, batch_size=3).fit(support, labels, 3, generator=torch.Generator())
    assert mini.stats["forward_backward_evaluations"].tolist() == [2.5] * 4   # 10 steps of 3 of 12 points
    # Never fitted (band below any loss 10 steps reach): 1 + 2 restarts of 10 steps each are paid for.
    hard = get_head("sgd", steps=10, band=[0.0, 1e-6], on_failure="restart", max_restarts=2)
    fit = hard.fit(support, labels, 3, generator=torch.Generator())
    assert fit.stats["restarts"].tolist() == [2.0] * 4 and fit.stats["steps"].tolist() == [10.0] * 4
    assert fit.stats["forward_backward_evaluations"].tolist() == [30.0] * 4
