"""Network heads (`model: mlp`): batched fits against per-episode references, and bad input."""
from __future__ import annotations

import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import HeadFit, get_head
from fewshot.heads.mlp_compass import search_network
from fewshot.heads.mlp_model import MLPModel
from fewshot.run.diagnostics import LINEAR_ONLY, absent_diagnostics, diagnose


def _episodes(episodes: int = 3, shots: int = 2, dim: int = 12, n_way: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(episodes, shots * n_way, dim, generator=g)
    support = support / support.norm(dim=2, keepdim=True)
    labels = torch.arange(n_way).repeat(shots).expand(episodes, -1).contiguous()
    return support, labels, n_way


def _reference_sgd(model: MLPModel, support, labels, n_way, start, c) -> torch.Tensor:
    """One episode at a time: plain torch.optim on the layers (weights decayed, biases not)."""
    out = []
    dim = support.shape[2]
    for e in range(len(support)):
        layers = model.layers(start[e].clone(), dim, n_way)
        weights = [layer[:-1].clone().requires_grad_(True) for layer in layers]
        biases = [layer[-1].clone().requires_grad_(True) for layer in layers]
        groups = [{"params": weights, "weight_decay": c["weight_decay"]}, {"params": biases, "weight_decay": 0.0}]
        opt = torch.optim.Adam(groups, lr=c["lr"]) if c.get("optimizer") == "adam" else \
            torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"])
        for _ in range(c["steps"]):
            opt.zero_grad()
            hidden = support[e]
            for i, (w, b) in enumerate(zip(weights, biases)):
                hidden = (hidden.relu() if i else hidden) @ w + b
            torch.nn.functional.cross_entropy(hidden, labels[e]).backward()
            opt.step()
        out.append(torch.cat([torch.cat([w, b.unsqueeze(0)]).flatten() for w, b in zip(weights, biases)]).detach())
    return torch.stack(out)


@pytest.mark.parametrize("depth,optimizer", [(1, "sgd"), (2, "sgd"), (1, "adam")])
def test_mlp_sgd_matches_per_episode_torch_optim(depth, optimizer):
    support, labels, n_way = _episodes()
    c = {"lr": 0.3 if optimizer == "sgd" else 0.01, "momentum": 0.9, "weight_decay": 0.01, "steps": 40,
         "optimizer": optimizer}
    head = get_head("sgd", model="mlp", width=8, depth=depth, init="uniform", **c)
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(5))
    model = MLPModel(8, depth)
    start = model.draw_start("uniform", 1.0, len(support), support.shape[2], n_way, torch.Generator().manual_seed(5), "cpu")
    expected = _reference_sgd(model, support, labels, n_way, start, c)
    assert fit.model is not None and fit.params.shape == expected.shape
    torch.testing.assert_close(fit.params, expected, atol=2e-5, rtol=1e-4)
    logits = head.predict(fit, support)       # predicts through the network
    torch.testing.assert_close(logits, model.logits(expected.unsqueeze(1), support).squeeze(1), atol=1e-4, rtol=1e-4)


def test_mlp_sgd_dual_equals_primal_with_minibatches_and_band():
    support, labels, n_way = _episodes(episodes=4, shots=3)
    common = dict(model="mlp", width=6, init="gaussian", steps=30, batch_size=4, loss="full_norm", band=[0.0, 0.9])
    fits = [get_head("sgd", form=form, **common).fit(support, labels, n_way, generator=torch.Generator().manual_seed(2))
            for form in ("auto", "primal")]
    torch.testing.assert_close(fits[0].params, fits[1].params, atol=1e-5, rtol=1e-4)
    assert torch.equal(fits[0].stats["steps"], fits[1].stats["steps"])


class _Recording:
    def __init__(self, config):
        self.config, self.moves = config, []

    def on_accept(self, episodes, params, steps):
        self.moves += list(zip(episodes.tolist(), params.tolist(), steps.tolist()))


@pytest.mark.parametrize("depth,loss,variant", [(1, "raw", "opportunistic"), (2, "raw", "parallel"),
                                                (1, "full_norm", "opportunistic"), (2, "full_norm", "opportunistic")])
def test_mlp_pattern_search_incremental_is_full_forward(depth, loss, variant):
    support, labels, n_way = _episodes(episodes=3)
    config = get_head("pattern_search", model="mlp", width=5, depth=depth, init="uniform", loss=loss,
                      variant=variant, max_evaluations=1500, chunk_size=32).config
    model = MLPModel(5, depth)
    runs = []
    for incremental in (True, False):
        head = _Recording(config)
        fit = search_network(head, model, support, labels, n_way, torch.Generator().manual_seed(3), incremental)
        runs.append((head.moves, fit))
    # every accepted move, in order (episode, parameter, step): the same trajectory step by step
    assert len(runs[0][0]) > 10 and runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1].params, runs[1][1].params)
    assert torch.equal(runs[0][1].stats["evaluations"], runs[1][1].stats["evaluations"])
    assert torch.equal(runs[0][1].stats["radius"], runs[1][1].stats["radius"])
    # the incrementally updated state ends where a forward pass of the final weights is
    torch.testing.assert_close(runs[0][1].stats["support_loss"], runs[1][1].stats["support_loss"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("depth", [1, 2])
def test_mlp_pattern_search_same_trajectory_through_radius_halvings(depth):
    """A long scale-invariant search: many accepted moves and several radius halvings (where the
    incremental state is refreshed exactly), still move for move the full-forward search."""
    support, labels, n_way = _episodes(episodes=3)
    config = get_head("pattern_search", model="mlp", width=3, depth=depth, init="uniform", loss="full_norm",
                      variant="opportunistic", max_evaluations=2000, chunk_size=32, loss_threshold=1e-3).config
    runs = []
    for incremental in (True, False):
        head = _Recording(config)
        fit = search_network(head, MLPModel(3, depth), support, labels, n_way, torch.Generator().manual_seed(3), incremental)
        runs.append((head.moves, fit))
    assert len(runs[0][0]) > 200 and runs[0][0] == runs[1][0]
    assert runs[0][1].stats["radius"].min() < 1.0                # the radius halved (an exact refresh) somewhere
    assert torch.equal(runs[0][1].params, runs[1][1].params)
    torch.testing.assert_close(runs[0][1].stats["support_loss"], runs[1][1].stats["support_loss"], atol=1e-6, rtol=0)


def test_mlp_pattern_search_opportunistic_does_not_depend_on_chunk():
    support, labels, n_way = _episodes()
    fits = [get_head("pattern_search", model="mlp", width=4, init="uniform", chunk_size=size,
                     max_evaluations=800).fit(support, labels, n_way, generator=torch.Generator().manual_seed(1))
            for size in (1, 64)]
    assert torch.equal(fits[0].params, fits[1].params)


@pytest.mark.parametrize("name,settings", [("greedy_random", {"max_steps": 400}), ("pattern_search", {}),
                                           ("sgd", {"steps": 100})])
def test_network_heads_fit_separable_support(name, settings):
    support, labels, n_way = _episodes()
    head = get_head(name, model="mlp", width=8, init="uniform", **settings)
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(0))
    assert (head.predict(fit, support).argmax(-1) == labels).all()
    assert fit.stats["fitted"].eq(1).all()


def test_blackbox_runs_a_network_model():
    pytest.importorskip("cma")
    support, labels, n_way = _episodes(episodes=2)
    head = get_head("blackbox", model="mlp", width=4, init="uniform", budget=200)
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(0))
    assert fit.params.shape == (2, MLPModel(4).n_params(support.shape[2], n_way))
    assert fit.stats["evaluations"].le(200).all()
    torch.testing.assert_close(head.predict(fit, support), MLPModel(4).logits(fit.params.unsqueeze(1), support).squeeze(1))


def test_network_diagnostics_leave_linear_only_ones_out():
    support, labels, n_way = _episodes()
    head = get_head("sgd", model="mlp", width=8, init="uniform", steps=50)
    fit = head.fit(support, labels, n_way, generator=torch.Generator().manual_seed(0))
    stats = diagnose(head, fit, support, labels, generator=torch.Generator().manual_seed(0))
    assert set(stats) == {"support_loss", "support_accuracy", "weight_norm", "sparsity", "function_margin"}
    assert set(absent_diagnostics(fit)) == set(LINEAR_ONLY)
    assert absent_diagnostics(HeadFit(fit.weight, fit.bias)) == {}
    with pytest.raises(UserError, match="max_margin_cosine"):
        diagnose(head, fit, support, labels, generator=torch.Generator(), names=["max_margin_cosine"])


@pytest.mark.parametrize("name,settings,key", [
    ("sgd", {"model": "mlp", "width": 0, "init": "uniform"}, "width"),
    ("pattern_search", {"model": "mlp", "depth": 3, "init": "uniform"}, "depth"),
    ("greedy_random", {"model": "mlp", "depth": 0, "init": "uniform"}, "depth"),
    ("sgd", {"model": "mlp", "init": "zero"}, "init"),
    ("sgd", {"model": "mlp", "init": "uniform", "loss": "span_norm"}, "loss"),
    ("pattern_search", {"model": "mlp", "init": "uniform", "variant": "block"}, "variant"),
    ("guess_check", {"distribution": "nngp"}, "method"),
    ("guess_check", {"distribution": "nngp", "method": "exact", "loss": "span_norm"}, "loss"),
    ("guess_check", {"distribution": "nngp", "method": "exact", "nngp": {"depth": 3}}, "depth"),
])
def test_bad_network_settings_name_the_fix(name, settings, key):
    with pytest.raises(UserError, match=key) as error:
        get_head(name, **settings)
    assert f"Set heads.{name}" in str(error.value)     # the message names the fix


def test_linear_plugin_fit_still_predicts_linearly():
    support, labels, n_way = _episodes()
    weight, bias = torch.randn(3, 12, n_way), torch.randn(3, n_way)
    head = get_head("sgd")
    torch.testing.assert_close(head.predict(HeadFit(weight, bias, {}), support), support @ weight + bias.unsqueeze(1))
