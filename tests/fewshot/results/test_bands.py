"""Bands expand into heads; results count fitted episodes, drop failures, pool volumes and hold
band tables that recompute from the per-episode values; the leaderboard prints them."""
from __future__ import annotations

import math

import pytest
import torch

from episodes.errors import UserError
from fewshot.results.bands import band_table, expand_bands
from fewshot.config import load_config
from fewshot.heads import get_head
from fewshot.heads.common import linear_accuracy
from fewshot.report.leaderboard import merge, to_markdown
from fewshot.results.document import HeadResult, build_results
from fewshot.results.stats import compare, fitted_accuracy, pooled_volume, summarize


def test_bands_expand_into_one_labelled_entry_per_band():
    heads = expand_bands({"sgd": {"init": "uniform", "bands": [[0.3, 0.35], [0.35, 0.4]]}, "prototype": {}})
    assert list(heads) == ["sgd@0.30-0.35", "sgd@0.35-0.40", "prototype"]
    assert heads["sgd@0.35-0.40"] == {"init": "uniform", "head": "sgd", "band": [0.35, 0.4]}


@pytest.mark.parametrize("bands, words", [([[0.4, 0.3]], "low < high"), ([[0.3, 0.3]], "low < high"),
                                          ([[0.3]], "pair"), ([], "non-empty"), ([[-0.1, 0.2]], "0 <= low")])
def test_bad_bands_are_config_errors(bands, words):
    with pytest.raises(UserError, match=words):
        load_config(None, [f"heads.sgd.bands={bands}"])


def _doc(on_failure="drop"):
    accuracy = [torch.tensor([0.9, 0.5, 0.7, 0.6]), torch.tensor([0.8, 0.8, 0.4, 0.2]), torch.tensor([0.5] * 4)]
    fitted = [torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.zeros(4)]
    heads = [HeadResult(name, {"head": name.split("@")[0], "on_failure": on_failure, "band": band}, acc, 1.0,
                        {"fit_fitted": fit, "fit_restarts": torch.tensor([0.0, 2.0, 0.0, 1.0])})
             for name, band, acc, fit in zip(["sgd@0.30-0.35", "pattern_search@0.30-0.35", "sgd@0.35-0.40"],
                                             [[0.3, 0.35], [0.3, 0.35], [0.35, 0.4]], accuracy, fitted)]
    heads.append(HeadResult("prototype", {"head": "prototype"}, torch.tensor([0.7, 0.6, 0.5, 0.4]), 0.1))
    return build_results(config={"name": "t"}, dataset={"name": "glyphs", "fingerprint": "d"}, backbone={},
                         episodes={"n_way": 5, "k_shot": 1, "fingerprint": "e"}, heads=heads, hardware={})


def test_drop_averages_fitted_episodes_and_counts_them():
    doc = _doc()
    sgd = doc["heads"][0]
    assert sgd["per_episode_fitted"] == [1, 0, 1, 1] and sgd["per_episode_restarts"] == [0, 2, 0, 1]
    assert sgd["fitted"] == {"fraction": 0.75, "count": 3, "n": 4, "restarts": 3}
    assert sgd["accuracy"]["over"] == "fitted" and sgd["accuracy"]["n"] == 3
    assert math.isclose(sgd["accuracy"]["mean"], (0.9 + 0.7 + 0.6) / 3)
    unreached = doc["heads"][2]  # a band no head reaches: 0 fitted, no mean, no crash
    assert unreached["fitted"]["count"] == 0 and unreached["accuracy"]["mean"] is None
    scored = _doc("score")["heads"][0]
    assert scored["accuracy"]["over"] == "all" and scored["accuracy"]["n"] == 4


def test_comparisons_say_on_how_many_shared_episodes_they_were_computed():
    doc = _doc()
    pair = next(c for c in doc["comparisons"] if c["a"] == "sgd@0.30-0.35" and c["b"] == "pattern_search@0.30-0.35")
    assert pair["n"] == 1  # episode 0 only: both fitted
    with_prototype = next(c for c in doc["comparisons"] if c["a"] == "sgd@0.30-0.35" and c["b"] == "prototype")
    expected = compare([0.9, 0.7, 0.6], [0.7, 0.5, 0.4])
    assert with_prototype["n"] == 3 and math.isclose(with_prototype["mean_diff"], expected["mean_diff"])
    none = next(c for c in doc["comparisons"] if c["a"] == "sgd@0.35-0.40")
    assert none["n"] == 0 and none["mean_diff"] is None


def test_the_band_table_recomputes_from_the_stored_per_episode_values():
    doc = _doc()
    table = doc["band_table"]
    assert table["columns"] == ["sgd", "pattern_search"]
    assert [row["band"] for row in table["rows"]] == [[0.3, 0.35], [0.35, 0.4]]
    assert band_table(doc["heads"]) == table
    cell = table["rows"][0]["cells"]["pattern_search"]
    assert cell["accuracy"] == fitted_accuracy([0.8, 0.8, 0.4, 0.2], [1, 1, 0, 0], drop=True)
    assert cell["accuracy"]["mean"] == summarize([0.8, 0.8])["mean"]
    assert "pattern_search" not in table["rows"][1]["cells"]
    text = to_markdown(merge([doc]), [doc])
    # The leaderboard pairs each band row on the episodes every head of the row fitted (0 here).
    assert "| Band | Paired episodes | sgd | pattern_search |" in text and "| 0.35-0.40 | 0 | n/a (0/4) |  |" in text
    assert "n/a" in text.split("| Band |")[0]  # the unreached head ranks last without a mean


def test_guess_check_volume_is_the_pooled_count_of_fitting_draws():
    generator = torch.Generator().manual_seed(0)
    support = torch.nn.functional.normalize(torch.randn(6, 2, 3, generator=generator), dim=-1)
    labels = torch.tensor([[0, 1]]).expand(6, -1).contiguous()
    batch = 64
    head = get_head("guess_check", batch=batch, max_guesses=batch)
    fit = head.fit(support, labels, 2, generator=torch.Generator().manual_seed(5))
    # Reference: the same single batch of draws, every draw checked.
    draws = (torch.rand((6, batch, 4, 2), generator=torch.Generator().manual_seed(5)) * 2 - 1)
    features = torch.cat([support, torch.ones(6, 2, 1)], dim=2)
    logits = torch.einsum("esd,ebdn->ebsn", features, draws)
    fits = (linear_accuracy(logits, labels.unsqueeze(1)) == 1.0).sum(dim=1).float()
    assert fit.stats["fits"].tolist() == fits.tolist()
    assert fit.stats["tested"].tolist() == [float(batch)] * 6
    volume = pooled_volume(fit.stats["fits"].tolist(), fit.stats["tested"].tolist())
    assert volume["fitted"] == int(fits.sum()) and volume["tested"] == 6 * batch
    assert volume["estimate"] == fits.sum().item() / (6 * batch)
    assert volume["low"] < volume["estimate"] < volume["high"]
    doc = build_results(config={}, dataset={"name": "x", "fingerprint": "d"}, backbone={},
                        episodes={"n_way": 2, "k_shot": 1, "fingerprint": "e"}, hardware={},
                        heads=[HeadResult("guess_check", {}, torch.ones(6), 0.1,
                                          {f"fit_{k}": v for k, v in fit.stats.items()})])
    head = doc["heads"][0]
    assert head["volume"] == volume == pooled_volume(head["per_episode_fits"], head["per_episode_tested"])
    assert head["fitted"]["count"] == int((fit.stats["failed"] == 0).sum())


def test_guess_check_accepts_only_losses_inside_its_band():
    generator = torch.Generator().manual_seed(1)
    support = torch.nn.functional.normalize(torch.randn(5, 2, 3, generator=generator), dim=-1)
    labels = torch.tensor([[0, 1]]).expand(5, -1).contiguous()
    band = [0.45, 0.6]
    fit = get_head("guess_check", loss="span_norm", band=band, max_guesses=5000).fit(
        support, labels, 2, generator=torch.Generator().manual_seed(2))
    from fewshot.heads.losses import decision_loss
    loss = decision_loss("span_norm", support, labels, fit.weight, fit.bias)
    found = fit.stats["failed"] == 0
    assert bool(found.any())
    assert bool(((loss[found] > band[0]) & (loss[found] <= band[1] + 1e-6)).all())


def test_the_plot_draws_a_band_panel_and_skips_heads_without_a_mean(tmp_path):
    from matplotlib.image import imread
    from fewshot.report.plot import plot_accuracy
    doc = _doc()
    path = plot_accuracy([doc], tmp_path / "accuracy.png")
    with_bands = imread(path)
    doc_without = {key: value for key, value in doc.items() if key != "band_table"}
    without = imread(plot_accuracy([doc_without], tmp_path / "plain.png"))
    assert with_bands.shape[1] > without.shape[1]  # a second panel: the bands


def test_the_report_shows_the_band_table():
    from fewshot.report import build_report
    page = build_report([_doc()], sources=["banded.json"])
    section = page.split('<section id="bands">')[1].split("</section>")[0]
    assert "<td>0.35-0.40</td>" in section.replace(' class="num"', "") and "n/a (0/4)" in section
