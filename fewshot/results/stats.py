"""Statistics over episodes: Student-t quantiles, confidence intervals, paired comparisons.

The 95% interval is `t_{0.975, n-1} * std(ddof=1) / sqrt(n)` (DESIGN.md "Confidence interval"),
the convention of RFS and LibFewShot; quantiles and tests come from `scipy.stats`.

With a single episode the spread is undefined: `std` and `ci95` are then `None` (JSON `null`),
never NaN, so results files stay valid JSON and nobody mistakes "one sample" for "no error".
"""
from __future__ import annotations

import math
from typing import Sequence

import scipy.stats
import torch

CI_LEVEL = 0.95
CI_METHOD = "student-t"
CI_FORMULA = "t_{0.975, n-1} * std(ddof=1) / sqrt(n)"
# Ranks: a head is outranked only by heads significantly better than it (see `significance_ranks`).
RANK_ALPHA = 0.05
RANK_TEST = "two-sided paired t-test (scipy.stats.ttest_rel) on per-episode accuracy, p < 0.05, uncorrected"


def t_quantile(p: float, dof: float) -> float:
    """The `p` quantile of Student's t distribution (`scipy.stats.t.ppf`).

    Args:
        p: probability in (0, 1), e.g. 0.975 for a two-sided 95% interval.
        dof: degrees of freedom, > 0 (need not be an integer).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not dof > 0.0:
        raise ValueError(f"dof must be positive, got {dof}")
    return float(scipy.stats.t.ppf(p, dof))


def _as_float64(values: torch.Tensor | Sequence[float]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    tensor = torch.as_tensor(values, dtype=torch.float64).flatten()
    if tensor.numel() == 0:
        raise ValueError("cannot summarize zero values")
    return tensor


def _interval(tensor: torch.Tensor) -> tuple[float | None, float | None]:
    """Sample std (ddof=1) and the t-based 95% half-width; `None` for both when n == 1."""
    n = tensor.numel()
    if n < 2:
        return None, None
    std = float(tensor.std(unbiased=True))
    return std, t_quantile(0.5 + CI_LEVEL / 2.0, n - 1) * std / math.sqrt(n)


def summarize(values: torch.Tensor | Sequence[float]) -> dict:
    """Mean, sample std, 95% CI half-width and count of per-episode values.

    Args:
        values: one number per episode (e.g. query accuracy in [0, 1]).

    Returns:
        `{"mean", "std", "ci95", "n"}`; `std` and `ci95` are `None` when n == 1.
    """
    tensor = _as_float64(values)
    std, ci95 = _interval(tensor)
    return {"mean": float(tensor.mean()), "std": std, "ci95": ci95, "n": tensor.numel()}


def compare(a: torch.Tensor | Sequence[float], b: torch.Tensor | Sequence[float], *,
            a_name: str | None = None, b_name: str | None = None) -> dict:
    """Paired comparison of two heads evaluated on the same episodes.

    Args:
        a, b: per-episode values of the two heads, episode i of `a` paired with episode i of `b`.
        a_name, b_name: when given, stored under "a" and "b".

    Returns:
        `{"a", "b", "mean_diff", "ci95", "wins", "ties", "losses"}`: the mean of `a - b` with the
        t interval of the paired differences; wins/ties/losses count episodes where a > b,
        a == b, a < b.
    """
    first, second = _as_float64(a), _as_float64(b)
    if first.shape != second.shape:
        raise ValueError(f"paired comparison needs the same episodes, got {first.numel()} and {second.numel()} values")
    difference = first - second
    _, ci95 = _interval(difference)
    names = {key: name for key, name in (("a", a_name), ("b", b_name)) if name is not None}
    return {**names, "mean_diff": float(difference.mean()), "ci95": ci95,
            "wins": int((difference > 0).sum()), "ties": int((difference == 0).sum()),
            "losses": int((difference < 0).sum())}


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict[str, float | None]:
    """Two-sided p-values that two heads differ on the same episodes.

    Args:
        a, b: per-episode values, episode i of `a` paired with episode i of `b`.

    Returns:
        `{"t_test": p, "wilcoxon": p}` from `scipy.stats.ttest_rel` and `scipy.stats.wilcoxon`
        (zero differences dropped, as Wilcoxon's test does); `None` where a test is undefined
        (fewer than two episodes, or every difference zero).
    """
    first, second = _as_float64(a).numpy(), _as_float64(b).numpy()
    difference = first - second
    if difference.size < 2 or not difference.any():
        return {"t_test": None, "wilcoxon": None}
    t_p = float(scipy.stats.ttest_rel(first, second).pvalue)
    wilcoxon_p = float(scipy.stats.wilcoxon(difference, zero_method="wilcox").pvalue)
    return {"t_test": t_p if math.isfinite(t_p) else None,
            "wilcoxon": wilcoxon_p if math.isfinite(wilcoxon_p) else None}


def significantly_better(a: Sequence[float] | None, b: Sequence[float] | None, mean_a: float, mean_b: float,
                         paired: bool, alpha: float = RANK_ALPHA) -> bool:
    """Whether head `a` beats head `b`: a higher mean and, where per-episode values exist, p < alpha.

    Args:
        a, b: per-episode values, or None when a results file does not carry them (then any
            higher mean counts, the plain ranking by accuracy).
        mean_a, mean_b: the stored means.
        paired: the two were evaluated on the same episodes (paired t-test); otherwise Welch's test.
        alpha: significance level.
    """
    if not mean_a > mean_b:
        return False
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return True
    if paired and len(a) == len(b):
        p = paired_tests(a, b)["t_test"]
    else:
        p = float(scipy.stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return p is not None and math.isfinite(p) and p < alpha


def significance_ranks(means: Sequence[float], per_episode: Sequence[Sequence[float] | None],
                       episode_keys: Sequence[str], alpha: float = RANK_ALPHA,
                       ranked: Sequence[bool] | None = None) -> list[int]:
    """Ranks that respect statistics: 1 + the number of heads significantly better than each.

    Heads whose difference is not significant are not ordered, so two heads share a rank
    unless something beats one and not the other. Without per-episode values this is the
    usual competition ranking by mean (equal means share a rank).

    Args:
        means: mean accuracy of each head.
        per_episode: its per-episode accuracies, or None.
        episode_keys: which episodes each head ran on (equal keys are paired, e.g. the episode fingerprint).
        alpha: significance level of each two-sided test.
        ranked: False for heads that outrank nobody (reference heads such as oracles); they
            still get the rank they would have. Default: every head counts.
    """
    count = len(means)
    ranked = [True] * count if ranked is None else list(ranked)
    return [1 + sum(significantly_better(per_episode[j], per_episode[i], means[j], means[i],
                                         episode_keys[i] == episode_keys[j], alpha)
                    for j in range(count) if j != i and ranked[j])
            for i in range(count)]

def fitted_summary(fitted: Sequence[int], restarts: Sequence[float] | None = None) -> dict:
    """How many episodes a head fitted: `{"fraction", "count", "n", "restarts"}`.

    Args:
        fitted: 0/1 per episode (stored as `per_episode_fitted`).
        restarts: restarts used per episode (stored as `per_episode_restarts`); its total is reported.
    """
    count = int(sum(int(flag) for flag in fitted))
    total = len(fitted)
    return {"fraction": count / total if total else None, "count": count, "n": total,
            "restarts": int(sum(restarts)) if restarts is not None else 0}


def fitted_accuracy(values: Sequence[float], fitted: Sequence[int] | None, drop: bool) -> dict:
    """The accuracy summary of a head: over all episodes, or over its fitted ones when `drop`.

    Returns `summarize`'s keys plus `"over"` (`all` or `fitted`); with no fitted episode the
    mean, std and ci95 are `None` and n is 0 (a band no head reaches is not an error).

    Args:
        values: per-episode accuracy; fitted: 0/1 per episode (None: all count); drop: average
            fitted episodes only.
    """
    if not drop or fitted is None:
        return {**summarize(values), "over": "all"}
    kept = [value for value, flag in zip(values, fitted, strict=True) if flag]
    if not kept:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "over": "fitted"}
    return {**summarize(kept), "over": "fitted"}


def compare_shared(a: Sequence[float], b: Sequence[float], a_kept: Sequence[int] | None = None,
                   b_kept: Sequence[int] | None = None, *, a_name: str | None = None,
                   b_name: str | None = None) -> dict:
    """`compare` on the episodes both heads count (those each keeps), with their number `"n"`.

    Args:
        a, b: per-episode values on the same episodes.
        a_kept, b_kept: 0/1 per episode, the episodes each head's mean counts (None: all).
        a_name, b_name: stored under "a" and "b".
    """
    shared = [i for i in range(len(a)) if (a_kept is None or a_kept[i]) and (b_kept is None or b_kept[i])]
    if not shared:
        names = {key: name for key, name in (("a", a_name), ("b", b_name)) if name is not None}
        return {**names, "mean_diff": None, "ci95": None, "wins": 0, "ties": 0, "losses": 0, "n": 0}
    result = compare([a[i] for i in shared], [b[i] for i in shared], a_name=a_name, b_name=b_name)
    return {**result, "n": len(shared)}


def pooled_volume(fits: Sequence[float], tested: Sequence[float]) -> dict:
    """Volume of the fitting region from pooled counts: sum(fits) / sum(tested) over episodes.

    The interval is Clopper-Pearson's exact 95% binomial interval of the pooled counts (treating
    the draws as one sample; the episodes' volumes differ, so it is the error of the pooled
    average's sampling, not of any one episode's volume).

    Args:
        fits, tested: per episode, draws that fitted and draws tested.
    """
    from scipy.stats import binomtest  # scipy is only needed where volumes are reported
    fitted, total = int(round(sum(fits))), int(round(sum(tested)))
    if total == 0:
        return {"estimate": None, "low": None, "high": None, "fitted": 0, "tested": 0}
    interval = binomtest(fitted, total).proportion_ci(confidence_level=CI_LEVEL, method="exact")
    return {"estimate": fitted / total, "low": float(interval.low), "high": float(interval.high),
            "fitted": fitted, "tested": total}
