"""The swa head: its head is the mean of a reference SGD run's iterates (constant and cyclic rates)."""
import pytest
import torch
import torch.nn.functional as F

from episodes.errors import UserError
from fewshot.heads import get_head
from tests.fewshot.heads.test_sgd import class_structured_episodes

SETTINGS = dict(steps=30, lr=0.5, lr_min=0.05, momentum=0.9, weight_decay=5e-3, cycle=5, average_start=12)


def reference_average(support, labels, n_way, *, schedule, steps, lr, lr_min, momentum, weight_decay, cycle,
                      average_start):
    """One episode at a time: torch.optim.SGD with the rate set each step, and the mean of the
    iterates after steps i >= average_start (every one, or each cycle's end): the slow truth."""
    weights, biases = [], []
    for features, targets in zip(support, labels):
        weight = torch.zeros(features.shape[1], n_way, requires_grad=True)
        offset = torch.zeros(n_way, requires_grad=True)
        optimizer = torch.optim.SGD([{"params": [weight], "weight_decay": weight_decay},
                                     {"params": [offset], "weight_decay": 0.0}], lr=lr, momentum=momentum)
        kept = []
        for i in range(1, steps + 1):
            t = ((i - 1) % cycle + 1) / cycle
            for group in optimizer.param_groups:
                group["lr"] = lr if schedule == "constant" else (1 - t) * lr + t * lr_min
            optimizer.zero_grad()
            F.cross_entropy(features @ weight + offset, targets).backward()
            optimizer.step()
            if i >= average_start and (schedule == "constant" or i % cycle == 0):
                kept.append((weight.detach().clone(), offset.detach().clone()))
        weights.append(torch.stack([w for w, _ in kept]).mean(0))
        biases.append(torch.stack([b for _, b in kept]).mean(0))
    return torch.stack(weights), torch.stack(biases)


@pytest.mark.parametrize("schedule", ["constant", "cyclic"])
def test_swa_is_the_mean_of_a_reference_runs_iterates(schedule):
    support, labels = class_structured_episodes(5)
    head = get_head("swa", schedule=schedule, **SETTINGS)
    assert head.uses_dual_form
    fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    weight, bias = reference_average(support, labels, 3, schedule=schedule, **SETTINGS)
    torch.testing.assert_close(fit.weight, weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.bias, bias, atol=1e-5, rtol=0)
    # Not the last iterate: the average differs from plain SGD's head.
    last = get_head("sgd", **{k: v for k, v in SETTINGS.items() if k in ("steps", "lr", "momentum", "weight_decay")})
    if schedule == "constant":
        assert (fit.weight - last.fit(support, labels, 3, generator=torch.Generator()).weight).abs().max() > 1e-3


def test_dual_and_primal_forms_average_the_same_mini_batch_iterates():
    support, labels = class_structured_episodes(4)
    dual = get_head("swa", batch_size=5, **SETTINGS)
    primal = get_head("swa", batch_size=5, form="primal", **SETTINGS)
    a = dual.fit(support, labels, 3, generator=torch.Generator().manual_seed(1))
    b = primal.fit(support, labels, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.weight, b.weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.bias, b.bias, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides, key", [({"average_start": 0}, "average_start"),
                                            ({"average_start": 31}, "average_start"),
                                            ({"cycle": 0}, "cycle"), ({"lr_min": 0.0}, "lr_min"),
                                            ({"cycle": 40, "average_start": 1}, "average_start")])
def test_bad_settings_are_user_errors(overrides, key):
    with pytest.raises(UserError, match=f"heads.swa.{key}"):
        get_head("swa", **{**SETTINGS, **overrides})
