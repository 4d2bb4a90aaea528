"""The volume analysis: same numbers whatever the batching; results section, table and plot."""
import json

import torch

import fewshot.run.volume_analysis as analysis
from fewshot.results.document import HeadResult
from fewshot.run.volume_analysis import analyze_episodes, summarize_volume
from fewshot.volume import Constraints, split_volume
from fewshot.volume.config import VolumeConfig
from fewshot.report.volume_tables import plot_volume, volume_markdown

CONFIG = VolumeConfig(enabled=True, chains=16, repeats=2, sweeps=2, burn_in=2, max_levels=60)


def _episodes(count=4, n_way=3, k_shot=2, n_query=2, dim=8):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(count, n_way, dim, generator=g)
    draw = lambda k: torch.nn.functional.normalize(  # noqa: E731
        centres.repeat_interleave(k, 1) + 0.7 * torch.randn(count, n_way * k, dim, generator=g), dim=-1)
    labels = lambda k: torch.arange(n_way).repeat_interleave(k).expand(count, -1).contiguous()  # noqa: E731
    return draw(k_shot), labels(k_shot), draw(n_query), labels(n_query)


def test_same_numbers_whatever_the_batching():
    s, y, q, qy = _episodes()
    whole = analyze_episodes(s, y, q, qy, 3, [0, 1, 2, 3], CONFIG, seed=0, setting="t")
    parts = [analyze_episodes(s[i:i + 1], y[i:i + 1], q[i:i + 1], qy[i:i + 1], 3, [i], CONFIG, seed=0, setting="t")
             for i in range(4)]
    for key, value in whole.items():
        # Identical draws; only batched reductions (std over repeats) may differ in the last bit.
        assert torch.allclose(value, torch.cat([part[key] for part in parts]), rtol=1e-12, atol=0), key


def test_results_section_table_and_plot(tmp_path):
    s, y, q, qy = _episodes()
    values = analyze_episodes(s, y, q, qy, 3, [0, 1, 2, 3], CONFIG, seed=0, setting="t")
    heads = [HeadResult("sgd", {}, torch.tensor([1.0, 0.5, 0.75, 1.0]), 0.1)]
    section = summarize_volume(values, heads, CONFIG, seed=0, count=4, queries=6)
    json.dumps(section, allow_nan=False)                        # storable as it is
    assert section["expected_accuracy"]["mean"] is not None and len(section["log10_volume"]["per_episode"]) == 4
    assert 0 <= section["heads"]["sgd"]["percentile"]["mean"] <= 100
    assert section["log10_volume_good"]["mean"] <= section["log10_volume"]["mean"]
    doc = {"dataset": {"name": "toy"}, "episodes": {"n_way": 3, "k_shot": 2}, "volume": section}
    assert "G&C expected query accuracy" in volume_markdown([doc])
    plot_volume([doc], tmp_path / "volume.png")
    assert (tmp_path / "volume.png").stat().st_size > 1000


def test_good_and_poisoned_volumes_on_the_first_episodes_only():
    import dataclasses
    s, y, q, qy = _episodes()
    every = analyze_episodes(s, y, q, qy, 3, [0, 1, 2, 3], CONFIG, seed=0, setting="t")
    first_two = analyze_episodes(s, y, q, qy, 3, [0, 1, 2, 3], dataclasses.replace(CONFIG, poisoned_episodes=2),
                                 seed=0, setting="t")
    for key in ("log10_volume_good", "log10_volume_poisoned"):
        assert torch.allclose(first_two[key][:2], every[key][:2], rtol=1e-12, atol=0), key
        assert first_two[key][2:].isnan().all(), key       # not measured, not a number
    assert torch.equal(first_two["log10_volume"], every["log10_volume"])
    heads = [HeadResult("sgd", {}, torch.tensor([1.0, 0.5, 0.75, 1.0]), 0.1)]
    section = summarize_volume(first_two, heads, CONFIG, seed=0, count=4, queries=6)
    json.dumps(section, allow_nan=False)
    good = section["log10_volume_good"]
    assert good["n"] == 2 and good["n_infinite"] == 0 and good["per_episode"][2:] == [None, None]


def test_good_and_poisoned_in_one_run_equal_two_separate_runs():
    s, y, q, qy = _episodes()
    prior = CONFIG.logit_prior(torch.cat([s, q], 1))
    merged = analysis._good_and_poisoned(prior, y, qy, 3, [0, 1, 2, 3], CONFIG, seed=0, setting="t")
    for part, target in (("good", qy), ("poisoned", (qy + 1) % 3)):   # the straightforward way: a run per region
        region = Constraints.beat_all(torch.cat([y, target], 1), 3, prior)
        alone = split_volume(prior, region, 3, analysis._streams(0, "t", [0, 1, 2, 3], part, CONFIG.repeats),
                             CONFIG.splitting())
        assert torch.allclose(merged[part][0], alone.log10, rtol=1e-12, atol=0), part
        assert torch.allclose(merged[part][1], alone.se, rtol=1e-12, atol=0), part
    assert bool((merged["poisoned"][0] < merged["good"][0]).all())   # the two regions are told apart


def test_percentile_is_mid_rank():
    chains = torch.tensor([[0.0, 0.5, 0.5, 1.0]])
    assert float(analysis.head_percentile(chains, torch.tensor([0.5]))[0]) == 50.0
    assert float(analysis.head_percentile(chains, torch.tensor([1.0]))[0]) == 87.5


def test_bad_volume_settings_fail_clearly():
    import pytest
    from episodes.errors import UserError
    from fewshot.config import load_config
    for override, key in (("volume.scale=0", "volume.scale"), ("volume.chains=1", "volume.chains"),
                          ("volume.scale=-1", "volume.scale")):
        config = load_config(None, [override])
        with pytest.raises(UserError, match=key):
            config.volume.check("volume")


def test_matched_comparison_in_the_section_verify_and_table():
    """Per head, G&C at its own loss beside the unmatched numbers; verify reads it and finds a tampered value."""
    import dataclasses
    from fewshot.results.verify import _volume_problems
    from fewshot.run.volume_matched import analyze_matched
    s, y, q, qy = _episodes()
    config = dataclasses.replace(CONFIG, matched_loss="span_norm", matched_episodes=3, poisoned=False)
    values = analyze_episodes(s, y, q, qy, 3, [0, 1, 2, 3], config, seed=0, setting="t")
    heads = [HeadResult("sgd", {}, torch.tensor([1.0, 0.5, 0.75, 1.0]), 0.1,
                        diagnostics={"span_norm_loss": torch.tensor([0.9, 0.95, 1.0, 0.9])}),
             HeadResult("mlp", {}, torch.tensor([1.0, 0.5, 0.5, 1.0]), 0.1)]
    values.update(analyze_matched(s, y, q, qy, 3, [0, 1, 2, 3], config,
                                  {head.name: analysis._head_losses(head, "span_norm", [0, 1, 2, 3]) for head in heads},
                                  seed=0, setting="t"))
    section = summarize_volume(values, heads, config, seed=0, count=4, queries=6)
    json.dumps(section, allow_nan=False)
    matched = section["heads"]["sgd"]["matched"]
    assert matched["episodes"] == 3 and matched["log10_volume"]["per_episode"][3] is None
    # The matched region is inside the fitting region: its log10 P is lower, episode by episode.
    for inner, outer in zip(matched["log10_volume"]["per_episode"][:3], section["log10_volume"]["per_episode"]):
        assert inner < outer
    assert section["heads"]["mlp"]["matched"]["episodes"] == 0
    doc = {"dataset": {"name": "toy"}, "episodes": {"n_way": 3, "k_shot": 2}, "volume": section,
           "heads": [{"name": "sgd"}, {"name": "mlp"}]}
    assert _volume_problems(doc) == []
    table = volume_markdown([doc])
    assert "G&C accuracy at its loss (%)" in table
    assert [line for line in table.splitlines() if line.startswith("| mlp |")][0].endswith("| n/a | n/a | n/a | n/a |")
    matched["log10_volume"]["per_episode"][0] = 0.5                        # a probability above 1
    assert any("volume.heads" in problem for problem in _volume_problems(doc))
    matched["log10_volume"]["per_episode"] = [-1.0]
    assert any("matched.log10_volume.per_episode has 1 entries" in p for p in _volume_problems(doc))
