"""Ranks that respect statistics: heads whose paired difference is not significant share a rank."""
import itertools

import numpy as np
import pytest
import scipy.stats

from fewshot.report.leaderboard import merge
from fewshot.results.stats import RANK_ALPHA, paired_tests, significance_ranks


def reference_ranks(means, per_episode, keys, alpha=RANK_ALPHA):
    """Slow, direct reading of the rule: 1 + how many heads have a higher mean and p < alpha."""
    ranks = []
    for i in range(len(means)):
        better = 0
        for j in range(len(means)):
            if j == i or not means[j] > means[i]:
                continue
            if keys[i] == keys[j]:
                p = scipy.stats.ttest_rel(per_episode[j], per_episode[i]).pvalue
            else:
                p = scipy.stats.ttest_ind(per_episode[j], per_episode[i], equal_var=False).pvalue
            better += bool(np.isfinite(p) and p < alpha)
        ranks.append(1 + better)
    return ranks


def heads(seed: int, shifts: list[float], n: int = 200) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.4, 0.9, n)
    return [list(np.clip(base + shift + rng.normal(0, 0.08, n), 0, 1).round(4)) for shift in shifts]


@pytest.mark.parametrize("seed", range(6))
def test_ranks_match_the_reference(seed):
    values = heads(seed, [0.0, 0.005, 0.03, -0.04, 0.0])
    keys = ["ep"] * 4 + ["other"]  # the last head ran on other episodes: Welch's test
    means = [float(np.mean(v)) for v in values]
    assert significance_ranks(means, values, keys) == reference_ranks(means, values, keys)


def test_insignificant_differences_share_a_rank():
    a, b, c = heads(1, [0.0, 0.002, -0.1])
    means = [float(np.mean(v)) for v in (a, b, c)]
    assert paired_tests(a, b)["t_test"] > RANK_ALPHA
    assert significance_ranks(means, [a, b, c], ["ep"] * 3) == [1, 1, 3]


def test_without_per_episode_values_equal_means_share_a_rank():
    assert significance_ranks([0.7, 0.8, 0.7, 0.6], [None] * 4, ["ep"] * 4) == [2, 1, 2, 4]


def test_paired_tests_are_scipys_and_undefined_for_no_differences():
    a, b = heads(2, [0.0, 0.01])
    tests = paired_tests(a, b)
    assert tests["t_test"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-12)
    differences = np.array(a) - np.array(b)
    assert tests["wilcoxon"] == pytest.approx(scipy.stats.wilcoxon(differences).pvalue, rel=1e-12)
    assert paired_tests(a, a) == {"t_test": None, "wilcoxon": None}
    assert paired_tests([0.5], [0.4]) == {"t_test": None, "wilcoxon": None}


def test_leaderboard_ranks_runs_by_paired_tests():
    values = heads(3, [0.0, 0.003, -0.08])
    docs = [{"config": {"name": f"run{i}"}, "dataset": {"name": "glyphs", "fingerprint": "d"},
             "episodes": {"n_way": 5, "k_shot": 1, "fingerprint": "ep"},
             "heads": [{"name": name, "per_episode": v, "fit_seconds": 1.0,
                        "accuracy": {"mean": float(np.mean(v)), "ci95": 0.01, "n": len(v)}}]}
            for i, (name, v) in enumerate(zip(["sgd", "prototype", "pattern_search"], values))]
    rows = merge(docs)
    assert sorted((row.head, row.rank) for row in rows) == [("pattern_search", 3), ("prototype", 1), ("sgd", 1)]
    ranks = [row.rank for row in rows]
    assert ranks == sorted(ranks)
    for first, second in itertools.pairwise(rows):
        assert first.rank < second.rank or first.accuracy >= second.accuracy


def test_unranked_heads_outrank_nobody():
    a, b, oracle = heads(4, [0.0, -0.1, 0.3])
    means = [float(np.mean(v)) for v in (a, b, oracle)]
    assert significance_ranks(means, [a, b, oracle], ["ep"] * 3) == [2, 3, 1]
    assert significance_ranks(means, [a, b, oracle], ["ep"] * 3, ranked=[True, True, False]) == [1, 2, 1]
