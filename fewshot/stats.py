"""Statistics over episodes: Student-t quantiles, confidence intervals, paired comparisons.

The 95% interval is `t_{0.975, n-1} * std(ddof=1) / sqrt(n)` (DESIGN.md "Confidence interval"),
the convention of RFS and LibFewShot. The t quantile is computed here, without scipy, from the
regularized incomplete beta function.

With a single episode the spread is undefined: `std` and `ci95` are then `None` (JSON `null`),
never NaN, so results files stay valid JSON and nobody mistakes "one sample" for "no error".
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

CI_LEVEL = 0.95
CI_METHOD = "student-t"
CI_FORMULA = "t_{0.975, n-1} * std(ddof=1) / sqrt(n)"

_TINY = 1e-300
_EPSILON = 1e-16


def _stirling_correction(x: float) -> float:
    """`lgamma(x) - ((x - 0.5) ln x - x + 0.5 ln 2pi)` for x >= 10 (error below 1e-13)."""
    inverse, inverse_sq = 1.0 / x, 1.0 / (x * x)
    return inverse * (1 / 12 - inverse_sq * (1 / 360 - inverse_sq * (1 / 1260 - inverse_sq / 1680)))


def _log_beta(a: float, b: float) -> float:
    """`ln B(a, b)`, exact to ~1e-14 even when a or b is huge (lgamma differences would cancel)."""
    small, large = min(a, b), max(a, b)
    if large < 10.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(large) - lgamma(large + small) without subtracting two numbers of size large * ln(large).
    gamma_ratio = (-(large - 0.5) * math.log1p(small / large) - small * math.log(large + small) + small
                   + _stirling_correction(large) - _stirling_correction(large + small))
    return math.lgamma(small) + gamma_ratio


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of `I_x(a, b)`, evaluated with the modified Lentz method.

    Converges fast for x < (a + 1) / (a + b + 2); the caller swaps arguments otherwise.
    """
    denominator = 1.0 - (a + b) * x / (a + 1.0)
    denominator = 1.0 / (denominator if abs(denominator) > _TINY else _TINY)
    value, previous_numerator = denominator, 1.0
    for m in range(1, 100_000):
        for coefficient in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            denominator = 1.0 + coefficient * denominator
            denominator = 1.0 / (denominator if abs(denominator) > _TINY else _TINY)
            previous_numerator = 1.0 + coefficient / previous_numerator
            previous_numerator = previous_numerator if abs(previous_numerator) > _TINY else _TINY
            step = denominator * previous_numerator
            value *= step
        if abs(step - 1.0) < _EPSILON:
            return value
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(a: float, b: float, x: float, one_minus_x: float | None = None) -> float:
    """The regularized incomplete beta function `I_x(a, b)`.

    Args:
        a, b: positive shape parameters.
        x: the point, in [0, 1].
        one_minus_x: `1 - x` when the caller knows it more precisely than the subtraction.
    """
    y = 1.0 - x if one_minus_x is None else one_minus_x
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # log1p keeps the precision of whichever of x, 1 - x is tiny (dof ~ 1e9 puts x within 1e-9 of 1).
    log_x = math.log1p(-y) if x > 0.5 else math.log(x)
    log_y = math.log1p(-x) if y > 0.5 else math.log(y)
    log_front = a * log_x + b * log_y - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def t_survival(t: float, dof: float) -> float:
    """`P(T > t)` for Student's t with `dof` degrees of freedom, for t >= 0.

    Two equal forms: `0.5 * I_x(dof/2, 1/2)` with `x = dof / (dof + t^2)`, and
    `0.5 * (1 - I_y(1/2, dof/2))` with `y = 1 - x`. For huge dof, x sits within 1e-9 of 1 and
    `I_x` amplifies its rounding ~dof times, so |t| <= 3 (tails >= 1e-3, where `1 - I_y` loses
    under three digits) uses the second form, a continued fraction in the small y.
    """
    t_sq = t * t
    x, y = dof / (dof + t_sq), t_sq / (dof + t_sq)
    if 0.0 < t_sq <= 9.0 and y < 0.5:
        log_front = 0.5 * math.log(y) + dof / 2.0 * math.log1p(-y) - _log_beta(0.5, dof / 2.0)
        return 0.5 * (1.0 - math.exp(log_front) * _beta_continued_fraction(0.5, dof / 2.0, y) / 0.5)
    return 0.5 * regularized_beta(dof / 2.0, 0.5, x, y)


def _t_density(t: float, dof: float) -> float:
    log_norm = -_log_beta(dof / 2.0, 0.5) - 0.5 * math.log(dof)
    return math.exp(log_norm - (dof + 1.0) / 2.0 * math.log1p(t * t / dof))


def t_quantile(p: float, dof: float) -> float:
    """The `p` quantile of Student's t distribution (the inverse of its CDF).

    Newton's method on the survival function, kept inside a bisection bracket so it cannot
    diverge. Matches `scipy.stats.t.ppf` to 1e-12 relative for dof up to 1e6, and to 1e-11 at
    any dof for p in [0.001, 0.999] (so always for the 95% interval).

    Args:
        p: probability in (0, 1), e.g. 0.975 for a two-sided 95% interval.
        dof: degrees of freedom, > 0 (need not be an integer).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not dof > 0.0:
        raise ValueError(f"dof must be positive, got {dof}")
    if p == 0.5:
        return 0.0
    # 1 - p is exact for p >= 0.5 but rounds for tiny p, so the lower tail uses p itself.
    sign, tail = (-1.0, p) if p < 0.5 else (1.0, 1.0 - p)
    return sign * _upper_quantile(tail, dof)


def _upper_quantile(tail: float, dof: float) -> float:
    """The t >= 0 with `P(T > t) = tail`, for tail in (0, 0.5)."""
    low, high = 0.0, 2.0
    while t_survival(high, dof) > tail:
        low, high = high, high * 2.0
    t = (low + high) / 2.0
    for _ in range(200):
        excess = t_survival(t, dof) - tail  # > 0 means t is too small
        if excess > 0.0:
            low = t
        else:
            high = t
        density = _t_density(t, dof)
        newton = t + excess / density if density > 0.0 else math.nan
        next_t = newton if low < newton < high else (low + high) / 2.0
        if abs(next_t - t) <= 1e-15 * max(1.0, abs(t)) or high - low <= 1e-15 * high:
            return next_t
        t = next_t
    return t


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
