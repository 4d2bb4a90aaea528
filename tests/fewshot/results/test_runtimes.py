"""Runtime profiles: computed by hand on small runtimes, stored by build_results, verified on read."""
from __future__ import annotations

import json
import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.report.plot_runtime import render_runtime
from fewshot.results.document import HeadResult, build_results, read_results, write_results
from fewshot.results.runtimes import budget_grid, runtime_profile


def test_ecdf_and_data_profile_by_hand():
    runtimes = [[1, 4, None], [0, 10, None]]           # 6 pairs, 4 reached
    profile = runtime_profile(runtimes, largest=10, dimension=4)
    grid = profile["ecdf"]["evaluations"]
    assert grid[0] == 1 and grid[-1] == 10 and grid == sorted(set(grid))
    by_budget = dict(zip(grid, profile["ecdf"]["fraction"]))
    assert by_budget[1] == 2 / 6 and by_budget[4] == 3 / 6 and by_budget[10] == 4 / 6   # unreached stay in
    data = dict(zip(profile["data_profile"]["simplex_gradients"], profile["data_profile"]["fraction"]))
    assert data[1.0] == 3 / 6 and data[2.0] == 4 / 6   # alpha (P + 1) = 5, 10 evaluations
    assert (profile["pairs"], profile["reached"]) == (6, 4)
    assert budget_grid(1) == [1] and budget_grid(1000)[-1] == 1000 and len(budget_grid(1000)) == 28   # 31 steps, 1.26 / 1.58 / 2.51 merge when rounded


def _doc():
    runtimes = torch.tensor([[1.0, 5.0, math.inf], [2.0, math.inf, math.inf], [0.0, 3.0, 8.0]])
    diagnostics = {"fit_runtimes": runtimes, "fit_evaluations": torch.tensor([9.0, 9.0, 8.0]),
                   "fit_search_dimension": torch.full((3,), 12.0), "fit_evaluations_to_fit": torch.tensor([4, 9, 2.0])}
    head = HeadResult("blackbox", {"head": "blackbox", "targets": [1.0, 0.1, 0.01]}, torch.tensor([0.5, 0.6, 0.7]),
                      1.0, diagnostics=diagnostics)
    return build_results(config={}, dataset={"name": "d", "fingerprint": "x"}, backbone={},
                         episodes={"n_way": 3, "k_shot": 1, "fingerprint": "y"}, heads=[head])


def test_runtimes_are_stored_and_the_profile_recomputed_on_read(tmp_path):
    doc = _doc()
    head = doc["heads"][0]
    assert head["per_episode_runtimes"] == [[1, 5, None], [2, None, None], [0, 3, 8]]
    assert head["runtime_targets"] == [1.0, 0.1, 0.01] and head["runtime_dimension"] == 12
    assert "fit_runtimes" not in head["diagnostics"]
    assert head["runtime_profile"] == runtime_profile(head["per_episode_runtimes"], 9, 12)
    path = write_results(tmp_path / "results-3way-1shot.json", doc)
    assert read_results(path)["heads"][0]["runtime_profile"]["reached"] == 6
    assert render_runtime([doc])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("edit,message", [
    (lambda h: h["per_episode_runtimes"][1].__setitem__(1, 4), "runtime_profile"),
    (lambda h: h["runtime_profile"]["ecdf"]["fraction"].__setitem__(0, 0.9), "runtime_profile"),
    (lambda h: h["per_episode_runtimes"][0].append(3), "3 targets"),
    (lambda h: h["per_episode_runtimes"][0].__setitem__(0, -1), "per_episode_runtimes")])
def test_an_edited_runtime_or_profile_is_refused(tmp_path, edit, message):
    doc = _doc()
    edit(doc["heads"][0])
    path = tmp_path / "results-3way-1shot.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=message):
        read_results(path)
