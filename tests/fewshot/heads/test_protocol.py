"""The fit protocol: SGD from random starts, band stops, check cadence, restarts and drops."""
from __future__ import annotations

import pytest
import torch

from episodes.errors import UserError
from fewshot.config import load_config
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy, linear_logits
from fewshot.heads.losses import decision_loss
from fewshot.heads.starts import draw_start
from tests.fewshot.heads.data import blobs


def torch_sgd_reference(support, labels, n_way, config, seed):
    """Per-episode torch.optim.SGD from the same start, stopping like the head (band, cadence)."""
    episodes, _, dim = support.shape
    start = draw_start(config["init"], config.get("init_scale", 1.0), (episodes, dim + 1, n_way),
                       torch.Generator().manual_seed(seed), "cpu")
    weights, biases, steps = [], [], []
    band = config.get("band")
    for e in range(episodes):
        weight = start[e, :dim].clone().requires_grad_(True)
        bias = start[e, dim].clone().requires_grad_(True)
        optimizer = torch.optim.SGD([{"params": [weight], "weight_decay": config["weight_decay"]},
                                     {"params": [bias], "weight_decay": 0.0}],
                                    lr=config["lr"], momentum=config["momentum"])
        taken = 0
        for step in range(config["steps"]):
            if band is not None and step % config.get("check_every", 1) == 0:
                with torch.no_grad():
                    logits = support[e] @ weight + bias
                    loss = decision_loss(config["loss"], support[e:e + 1], labels[e:e + 1], weight[None], bias[None])
                    if bool((logits.argmax(1) == labels[e]).all()) and float(loss) <= band[1]:
                        break
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(support[e] @ weight + bias, labels[e]).backward()
            optimizer.step()
            taken += 1
        weights.append(weight.detach())
        biases.append(bias.detach())
        steps.append(taken)
    return torch.stack(weights), torch.stack(biases), steps


@pytest.mark.parametrize("config", [
    dict(init="uniform", steps=25, lr=0.5, momentum=0.9, weight_decay=0.0, loss="raw"),
    dict(init="uniform", steps=25, lr=0.5, momentum=0.9, weight_decay=0.05, loss="raw"),
    dict(init="gaussian", init_scale=0.3, steps=25, lr=0.3, momentum=0.0, weight_decay=0.01, loss="raw"),
    dict(init="uniform", steps=200, lr=0.5, momentum=0.9, weight_decay=5e-4, loss="span_norm",
         band=[0.7, 0.95], check_every=3),
    dict(init="uniform", steps=200, lr=0.5, momentum=0.9, weight_decay=0.0, loss="full_norm", band=[0.0, 1.09]),
])
def test_sgd_from_random_starts_matches_per_episode_torch_sgd(config):
    support, labels = blobs()
    head = get_head("sgd", **config)
    assert head.uses_dual_form
    fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(7))
    weight, bias, steps = torch_sgd_reference(support, labels, 3, config, seed=7)
    assert fit.stats["steps"].tolist() == steps
    torch.testing.assert_close(fit.weight, weight, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fit.bias, bias, atol=2e-5, rtol=1e-4)
    if "band" in config:
        assert min(steps) < config["steps"]  # the band stop happened


def _in_band(fit, support, labels, kind, band):
    accurate = linear_accuracy(linear_logits(support, fit.weight, fit.bias), labels) == 1.0
    loss = decision_loss(kind, support, labels, fit.weight, fit.bias)
    return accurate & (loss > band[0]) & (loss <= band[1])


@pytest.mark.parametrize("name, settings", [
    ("sgd", dict(steps=300, lr=0.5)),
    ("pattern_search", dict(variant="block", chunk_size=16, max_evaluations=4000)),
    ("pattern_search", dict(variant="opportunistic", max_evaluations=4000, check_every=4)),
    ("greedy_random", dict(sigma=0.5, candidates=8, max_steps=300)),
])
def test_a_band_stop_leaves_every_fitted_head_inside_its_band(name, settings):
    support, labels = blobs(episodes=6)
    band = [0.85, 0.98]
    head = get_head(name, init="uniform", loss="span_norm", band=band, **settings)
    fit = head.fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
    fitted = fit.stats["fitted"].bool()
    assert bool(fitted.any()), "the test band should be reachable"
    assert torch.equal(fitted, _in_band(fit, support, labels, "span_norm", band))
    loss = decision_loss("span_norm", support, labels, fit.weight, fit.bias)
    assert bool((loss[fitted] <= band[1]).all()) and bool((loss[fitted] > band[0]).all())


def test_check_every_checks_only_at_multiples_of_the_accepted_moves():
    support, labels = blobs(episodes=6)
    fit = get_head("pattern_search", init="uniform", check_every=7, max_evaluations=20000).fit(
        support, labels, 3, generator=torch.Generator().manual_seed(0))
    stopped_fitted = fit.stats["stop_reason"] == 0
    assert bool(stopped_fitted.any())
    assert bool((fit.stats["accepted"][stopped_fitted] % 7 == 0).all())


def test_a_band_no_head_reaches_gives_zero_fitted_and_restart_counts_every_try():
    support, labels = blobs()
    fit = get_head("sgd", init="uniform", band=[0.0, 1e-6], loss="span_norm", steps=20,
                   on_failure="restart", max_restarts=3).fit(support, labels, 3, generator=torch.Generator())
    assert fit.stats["fitted"].sum() == 0
    assert fit.stats["restarts"].tolist() == [3.0] * 4


def test_restart_refits_only_the_failures_and_counts_them():
    support, labels = blobs(episodes=8, noise=1.2)
    settings = dict(init="uniform", loss="span_norm", band=[0.9, 1.0], variant="block", chunk_size=16,
                    max_evaluations=1500)
    once = get_head("pattern_search", **settings).fit(support, labels, 3, generator=torch.Generator().manual_seed(1))
    again = get_head("pattern_search", on_failure="restart", max_restarts=4, **settings).fit(
        support, labels, 3, generator=torch.Generator().manual_seed(1))
    first_fitted = once.stats["fitted"].bool()
    assert bool((~first_fitted).any()), "the test needs failures to restart"
    # The first attempt is the same; fitted episodes are never restarted, failures at least once.
    assert torch.equal(again.weight[first_fitted], once.weight[first_fitted])
    assert bool((again.stats["restarts"][first_fitted] == 0).all())
    assert bool((again.stats["restarts"][~first_fitted] >= 1).all())
    still_failing = ~again.stats["fitted"].bool()
    assert bool((again.stats["restarts"][still_failing] == 4).all())
    assert again.stats["fitted"].sum() >= once.stats["fitted"].sum()
    assert torch.equal(again.stats["fitted"].bool(), _in_band(again, support, labels, "span_norm", [0.9, 1.0]))


@pytest.mark.parametrize("head, key, value, words", [
    ("sgd", "check_every", 0, "check_every"), ("pattern_search", "check_every", -1, "check_every"),
    ("greedy_random", "band", [0.5, 0.5], "band"), ("sgd", "band", [0.6, 0.4], "band"),
    ("sgd", "init_scale", 0.0, "init_scale")])
def test_bad_protocol_settings_are_user_errors(head, key, value, words):
    with pytest.raises(UserError, match=words):
        get_head(head, **{key: value})


def test_an_unknown_init_is_a_config_error_naming_the_choices():
    with pytest.raises(UserError, match="'zero', 'uniform', 'gaussian'"):
        load_config(None, ["heads.sgd.init=orthogonal"])
