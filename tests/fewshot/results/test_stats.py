"""Student-t quantiles, confidence intervals and paired comparisons, checked against scipy."""
import math

import pytest
import scipy.stats
import torch

from fewshot.results.stats import compare, summarize, t_quantile

PROBABILITIES = [1e-9, 0.001, 0.025, 0.05, 0.3, 0.5, 0.8, 0.95, 0.975, 0.995, 0.999999]


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 10, 29, 30, 99, 599, 1000, 10**4, 10**6, 2.5])
def test_t_quantile_matches_scipy(dof):
    for p in PROBABILITIES:
        expected = scipy.stats.t.ppf(p, dof)
        assert t_quantile(p, dof) == pytest.approx(expected, rel=1e-10, abs=1e-12), (p, dof)


def test_t_quantile_95_percent_interval_at_any_dof():
    for dof in [2, 14, 599, 10**7, 10**9]:
        assert t_quantile(0.975, dof) == pytest.approx(scipy.stats.t.ppf(0.975, dof), rel=1e-10)


def test_t_quantile_closed_forms():
    # One degree of freedom is the Cauchy distribution: quantile tan(pi (p - 1/2)).
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-13)
    # Two degrees of freedom: quantile (2p - 1) / sqrt(2 p (1 - p)).
    assert t_quantile(0.9, 2) == pytest.approx(0.8 / math.sqrt(2 * 0.9 * 0.1), rel=1e-13)
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.025, 599) == pytest.approx(-t_quantile(0.975, 599), rel=1e-13)


@pytest.mark.parametrize("p, dof", [(0.0, 5), (1.0, 5), (-0.1, 5), (0.5, 0), (0.9, -3)])
def test_t_quantile_rejects_impossible_arguments(p, dof):
    with pytest.raises(ValueError):
        t_quantile(p, dof)


def test_summarize_uses_student_t_over_episodes():
    accuracy = torch.tensor([0.84, 0.72, 0.96, 0.88, 0.80, 0.92, 0.76], dtype=torch.float64)
    summary = summarize(accuracy)
    std = float(accuracy.std(unbiased=True))
    assert summary["n"] == 7
    assert summary["mean"] == pytest.approx(float(accuracy.mean()), rel=1e-15)
    assert summary["std"] == pytest.approx(std, rel=1e-12)
    assert summary["ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 6) * std / math.sqrt(7), rel=1e-10)
    # 1.96 would give a narrower interval: the t quantile with 6 dof is 2.447.
    assert summary["ci95"] > 1.96 * std / math.sqrt(7)


def test_summarize_accepts_lists_and_float32_without_losing_precision():
    values = [0.1, 0.2, 0.4]
    assert summarize(values)["mean"] == pytest.approx(0.7 / 3, rel=1e-15)
    assert summarize(torch.tensor(values))["mean"] == pytest.approx(0.7 / 3, rel=1e-7)


def test_summarize_single_episode_has_no_interval():
    assert summarize([0.6]) == {"mean": 0.6, "std": None, "ci95": None, "n": 1}


def test_summarize_identical_episodes_have_zero_interval():
    summary = summarize([0.5] * 10)
    assert summary["std"] == 0.0 and summary["ci95"] == 0.0


def test_summarize_rejects_no_values():
    with pytest.raises(ValueError):
        summarize([])


def test_compare_is_a_paired_t_interval_with_win_counts():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 76, (200,), generator=generator).double() / 75
    b = (a + (torch.randint(-3, 3, (200,), generator=generator).double() / 75)).clamp(0, 1)
    result = compare(a, b, a_name="sgd", b_name="pattern_search")
    difference = (a - b).numpy()
    assert result["a"] == "sgd" and result["b"] == "pattern_search"
    assert result["mean_diff"] == pytest.approx(float(a.mean() - b.mean()), abs=1e-15)
    sem = scipy.stats.sem(difference)
    assert result["ci95"] == pytest.approx(scipy.stats.t.ppf(0.975, 199) * sem, rel=1e-10)
    assert result["wins"] == int((difference > 0).sum())
    assert result["ties"] == int((difference == 0).sum()) > 0
    assert result["losses"] == int((difference < 0).sum())
    assert result["wins"] + result["ties"] + result["losses"] == 200


def test_compare_is_antisymmetric():
    a, b = [0.9, 0.8, 0.7, 0.7], [0.8, 0.8, 0.9, 0.6]
    forward, backward = compare(a, b), compare(b, a)
    assert forward["mean_diff"] == pytest.approx(-backward["mean_diff"])
    assert forward["ci95"] == pytest.approx(backward["ci95"])
    assert (forward["wins"], forward["ties"], forward["losses"]) == (2, 1, 1)
    assert (backward["wins"], backward["losses"]) == (1, 2)
    assert "a" not in forward


def test_compare_needs_the_same_episodes():
    with pytest.raises(ValueError, match="same episodes"):
        compare([0.5, 0.6], [0.5, 0.6, 0.7])
