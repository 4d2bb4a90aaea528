"""The `blackbox` head: determinism per adapter, best-evaluated head, evaluation counts, bad input."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from episodes.errors import UserError
from fewshot.heads import get_head
from fewshot.heads.common import linear_loss
from tests.fewshot.heads.data import blobs

ADAPTERS = [("cma", "diagonal"), ("cma", "full"), ("torch", "sep_cma"), ("evotorch", "cem"), ("evotorch", "pgpe"),
            ("nevergrad", "DiagonalCMA"), ("nevergrad", "OnePlusOne")]


def _installed(library: str) -> bool:
    try:
        __import__(library)
    except ImportError:
        return False
    return True


def _fit(support, labels, seed=0, **settings):
    head = get_head("blackbox", **{"budget": 60, "sigma": 0.3, **settings})
    return head.fit(support, labels, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("library,optimizer", ADAPTERS)
def test_same_seed_same_heads_bit_for_bit(library, optimizer):
    if not _installed(library):
        pytest.skip(f"{library} is not installed (an optional extra)")
    support, labels = blobs(episodes=3, dim=8)
    one = _fit(support, labels, library=library, optimizer=optimizer)
    np.random.seed(123)
    np.random.standard_normal(7)     # an unrelated global draw in between changes nothing
    torch.randn(3)
    two = _fit(support, labels, library=library, optimizer=optimizer)
    assert torch.equal(one.weight, two.weight) and torch.equal(one.bias, two.bias)
    assert torch.equal(one.stats["runtimes"], two.stats["runtimes"])
    other = _fit(support, labels, seed=1, library=library, optimizer=optimizer)
    assert not torch.equal(one.weight, other.weight)


@pytest.mark.parametrize("library,optimizer", [a for a in ADAPTERS if a[0] != "evotorch"])
def test_an_episode_does_not_depend_on_its_batch_or_lockstep_group(library, optimizer):
    if not _installed(library):
        pytest.skip(f"{library} is not installed (an optional extra)")
    support, labels = blobs(episodes=4, dim=8)
    whole = _fit(support, labels, library=library, optimizer=optimizer)
    grouped = _fit(support, labels, library=library, optimizer=optimizer, episodes_at_once=3)
    prefix = _fit(support[:2], labels[:2], library=library, optimizer=optimizer, episodes_at_once=1)
    assert torch.equal(whole.weight, grouped.weight) and torch.equal(whole.bias, grouped.bias)
    assert torch.equal(whole.weight[:2], prefix.weight) and torch.equal(whole.stats["evaluations"][:2],
                                                                        prefix.stats["evaluations"])


def test_cma_returns_the_best_head_evaluated_and_counts_evaluations():
    support, labels = blobs(episodes=3, dim=8)
    fit = _fit(support, labels, budget=50, population=6, loss_threshold=1e-6)   # never stops early
    assert fit.stats["evaluations"].tolist() == [50.0] * 3          # 8 generations of 6, then 2 of the 9th
    assert fit.stats["calls"].tolist() == [9.0] * 3
    loss = linear_loss(torch.baddbmm(fit.bias.unsqueeze(1), support, fit.weight), labels)
    assert torch.allclose(loss, fit.stats["support_loss"], atol=1e-5)
    assert (loss < np.log(3)).all()       # better than the zero start
    runtimes = fit.stats["runtimes"]
    assert runtimes.shape == (3, 11) and ((runtimes <= 50) | runtimes.isinf()).all()
    # a looser target is never reached later than a tighter one
    assert (runtimes[:, :-1] <= runtimes[:, 1:]).all()


def test_protocol_stop_and_restarts():
    support, labels = blobs(episodes=3, dim=8, noise=0.2)
    fit = _fit(support, labels, budget=400)
    assert (fit.stats["stop_reason"] == 0).all() and (fit.stats["fitted"] == 1).all()
    assert (fit.stats["evaluations_to_fit"] <= fit.stats["evaluations"]).all()
    hard = _fit(support, labels, budget=12, loss_threshold=1e-3, on_failure="restart", max_restarts=2)
    assert hard.stats["restarts"].tolist() == [2.0] * 3 and hard.stats["evaluations"].tolist() == [36.0] * 3


@pytest.mark.parametrize("settings,match", [
    ({"library": "scipy"}, "library"), ({"optimizer": "cmaes"}, "diagonal, full"),
    ({"budget": 0}, "budget"), ({"population": 1}, "population"), ({"sigma": 0}, "sigma")])
def test_bad_settings_name_the_fix(settings, match):
    with pytest.raises(UserError, match=match):
        get_head("blackbox", **settings)


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nevergrad", None)      # import nevergrad now fails
    with pytest.raises(UserError, match=r"fewshot\[nevergrad\]"):
        get_head("blackbox", library="nevergrad", optimizer="OnePlusOne")


def test_nevergrad_adapter_on_a_fake_module_with_the_documented_api(monkeypatch):
    """The adapter uses only ask / tell / registry / p.Array; a fake proves the calls it makes."""
    class Candidate:
        def __init__(self, value): self.value = value

    class Array:
        def __init__(self, init): self.init, self.random_state = np.asarray(init), None
        def set_mutation(self, sigma): self.sigma = sigma; return self

    class RandomSearch:
        def __init__(self, parametrization, budget, num_workers):
            self.space, self.told = parametrization, []
        def ask(self):
            return Candidate(self.space.init + self.space.sigma * self.space.random_state.standard_normal(self.space.init.shape))
        def tell(self, candidate, value): self.told.append(value)

    fake = types.SimpleNamespace(p=types.SimpleNamespace(Array=Array),
                                 optimizers=types.SimpleNamespace(registry={"RandomSearch": RandomSearch}))
    monkeypatch.setitem(sys.modules, "nevergrad", fake)
    support, labels = blobs(episodes=2, dim=8)
    one = _fit(support, labels, library="nevergrad", optimizer="RandomSearch", budget=20)
    two = _fit(support, labels, library="nevergrad", optimizer="RandomSearch", budget=20)
    assert torch.equal(one.weight, two.weight) and one.stats["evaluations"].tolist() == [20.0, 20.0]
