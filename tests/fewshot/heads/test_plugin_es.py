"""The (1+1)-ES example plug-in (docs/blackbox.md's tutorial): registered through its entry point,
and its search on the public episode loss against a straightforward one-episode loop."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fewshot.heads.losses import decision_loss
from tests.fewshot.heads.data import blobs
from tests.fewshot.heads.test_plugin import install_example, run_with_plugin

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fewshot_es_example"

FIT_ES = """
import json, torch
from fewshot.heads import get_head
from fewshot.heads.losses import decision_loss
from tests.fewshot.heads.data import blobs
support, labels = blobs(episodes=4, dim=16)
runs = [get_head("one_plus_one_es", budget=200, sigma=0.3).fit(support, labels, 3, generator=torch.Generator().manual_seed(0))
        for _ in range(2)]
fit = runs[0]
accurate = (torch.baddbmm(fit.bias.unsqueeze(1), support, fit.weight).argmax(-1) == labels).all(dim=1)
print(json.dumps({"same": bool(torch.equal(fit.weight, runs[1].weight)), "accurate": accurate.tolist(),
                  "evaluations": fit.stats["evaluations"].tolist(), "to_fit": fit.stats["evaluations_to_fit"].tolist(),
                  "loss": decision_loss("raw", support, labels, fit.weight, fit.bias).tolist(),
                  "stored": fit.stats["support_loss"].tolist()}))
"""


@pytest.fixture(scope="module")
def es_path(tmp_path_factory) -> Path:
    return install_example(EXAMPLE, tmp_path_factory)


def test_fewshot_heads_lists_the_es(es_path):
    result = run_with_plugin(es_path, "-m", "fewshot", "heads")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    first = next(i for i, row in enumerate(rows) if " one_plus_one_es " in row)
    block = rows[first]          # the head's table row, then its wrapped lines (an empty name cell)
    for row in rows[first + 1:]:
        if not row.startswith("│") or row.split("│")[1].strip():
            break
        block += row.split("│")[3]
    assert "fewshot_es_example.OnePlusOneES" in block, result.stdout
    assert "budget=1000" in block.replace(" ", "") and "sigma=0.1" in block.replace(" ", ""), block


def test_es_fits_through_get_head_and_counts_evaluations(es_path):
    result = run_with_plugin(es_path, "-c", FIT_ES)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["same"] and all(out["accurate"])                     # first-fit stop: every episode fitted
    assert out["evaluations"] == out["to_fit"] and all(1 <= n <= 200 for n in out["evaluations"])
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(out["loss"], out["stored"]))


def test_es_search_equals_a_one_episode_loop_on_the_straightforward_loss(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from fewshot_es_example import OnePlusOneES
    support, labels = blobs(episodes=1, dim=10)
    budget, sigma, size = 60, 0.3, 11 * 3
    head = OnePlusOneES(budget=budget, sigma=sigma, band=[0.0, 1e-9])    # never stops: runs its budget
    fit = head.search(support, labels, 3, torch.Generator().manual_seed(5))
    # By hand: one child a step, the loss of each from its weight and bias, the one-fifth rule.
    generator, parent = torch.Generator().manual_seed(5), torch.zeros(1, size)
    parent_loss = best_loss = float(decision_loss("raw", support, labels, torch.zeros(1, 10, 3), torch.zeros(1, 3)))
    best, step = parent, sigma
    for _ in range(budget):
        child = parent + step * torch.randn(1, size, generator=generator)
        grid = child.view(1, 11, 3)
        value = float(decision_loss("raw", support, labels, grid[:, :10], grid[:, 10]))
        if value < best_loss:
            best, best_loss = child, value
        success = value <= parent_loss
        if success:
            parent, parent_loss = child, value
        step *= math.exp((float(success) - 0.2) / math.sqrt(size + 1))
    assert fit.stats["evaluations"].tolist() == [budget]
    assert torch.allclose(fit.weight, best.view(1, 11, 3)[:, :10], atol=1e-6)
    assert math.isclose(float(fit.stats["support_loss"]), best_loss, rel_tol=1e-5)
    assert math.isclose(float(fit.stats["final_sigma"]), step, rel_tol=1e-4)
    assert best_loss < math.log(3)                                   # it improved on the zero start
