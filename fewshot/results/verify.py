"""Results files verified on read: types first, then every statistic recomputed from the file.

A results file stores its per-episode values, and everything `build_results` derives from them
(means, intervals, counts, paired comparisons) goes through `head_statistics`
and `comparison_statistics` (defined here). The reader calls the same two functions on the
stored values and refuses a file whose numbers differ: an edited mean, a copied interval or a
dropped episode cannot reach a leaderboard or a resumed run.

Example:
    >>> verify_results(json.loads(path.read_text()), path)   # raises UserError naming the file
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from episodes.errors import fail
from fewshot.results.bands import band_table
from fewshot.results.runtimes import head_runtime_profile
from fewshot.results.stats import compare_shared, fitted_accuracy, fitted_summary, pooled_volume, summarize

# Relative tolerance of recomputed floats: the stored values round-trip through JSON exactly,
# so anything above float rounding means the file was changed after it was written.
TOLERANCE = 1e-9
MAX_LISTED = 4


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any) -> bool:
    return _number(value) and 0.0 <= value <= 1.0


def _optional_nonnegative(value: Any) -> bool:
    return value is None or (_number(value) and value >= 0)


def _non_finite(value: Any, where: str) -> list[str]:
    """Paths of NaN or infinite numbers anywhere in `value` (Python's json reads `NaN`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where} is {value}"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _non_finite(item, f"{where}.{key}" if where else str(key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _non_finite(item, f"{where}.{i}")]
    return []


Check = tuple[str, Callable[[Any], bool], str]
HEAD_CHECKS: tuple[Check, ...] = (
    ("name", lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    ("config", lambda v: isinstance(v, dict), "an object"),
    ("per_episode", lambda v: isinstance(v, list) and bool(v) and all(map(_fraction, v)),
     "a non-empty list of accuracies in [0, 1]"),
    ("fit_seconds", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("accuracy", lambda v: isinstance(v, dict), "an object"),
    ("accuracy.mean", lambda v: v is None or _fraction(v), "a number in [0, 1] (null only with n = 0)"),
    ("accuracy.std", _optional_nonnegative, "a number >= 0 or null"),
    ("accuracy.ci95", _optional_nonnegative, "a number >= 0 or null"),
    ("accuracy.n", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    ("diagnostics", lambda v: v is None or (isinstance(v, dict) and all(isinstance(d, dict) for d in v.values())),
     "an object of objects"),
    ("absent_diagnostics", lambda v: isinstance(v, dict) and all(isinstance(r, str) and r.strip() for r in v.values()),
     "an object of diagnostic names to non-empty reasons"),
    ("per_episode_fitted", lambda v: isinstance(v, list) and all(flag in (0, 1) and _integer(flag) for flag in v),
     "a list of 0/1 flags"),
    *((key, lambda v: isinstance(v, list) and all(_integer(c) and c >= 0 for c in v), "a list of integers >= 0")
      for key in ("per_episode_restarts", "per_episode_fits", "per_episode_tested", "per_episode_evaluations")),
    ("per_episode_runtimes", lambda v: isinstance(v, list) and all(
        isinstance(row, list) and all(r is None or (_integer(r) and r >= 0) for r in row) for row in v),
     "a list of lists of integers >= 0 or null"),
    ("runtime_targets", lambda v: isinstance(v, list) and bool(v) and all(_number(t) and t > 0 for t in v),
     "a non-empty list of numbers > 0"),
    ("runtime_dimension", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
)
PER_EPISODE_RECORDS = ("per_episode_fitted", "per_episode_restarts", "per_episode_fits", "per_episode_tested",
                       "per_episode_evaluations", "per_episode_runtimes")
RUNTIME_RECORDS = ("runtime_targets", "runtime_dimension")
COMPARISON_CHECKS: tuple[Check, ...] = (
    ("a", lambda v: isinstance(v, str), "a string"), ("b", lambda v: isinstance(v, str), "a string"),
    ("mean_diff", lambda v: v is None or _number(v), "a number (null only with n = 0)"),
    ("ci95", _optional_nonnegative, "a number >= 0 or null"),
    *((key, lambda v: _integer(v) and v >= 0, "an integer >= 0") for key in ("wins", "ties", "losses")),
)
DOC_CHECKS: tuple[Check, ...] = (
    ("dataset.name", lambda v: isinstance(v, str), "a string"),
    ("dataset.fingerprint", lambda v: isinstance(v, str), "a string"),
    ("episodes.fingerprint", lambda v: isinstance(v, str), "a string"),
    ("episodes.n_way", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    ("episodes.k_shot", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    ("comparisons", lambda v: isinstance(v, list) and all(isinstance(c, dict) for c in v), "a list of objects"),
)
_MISSING = object()
MAX_DEPTH = 32  # nesting a results file never needs (it has about 6 levels); deeper is a damaged file


def _numbers(low: float | None = None, high: float | None = None, length: bool = False) -> Callable[[Any], bool]:
    """A check of a list of numbers (None allowed: an episode not measured) within [low, high]."""
    def ok(values: Any) -> bool:
        return isinstance(values, list) and (bool(values) or not length) and all(
            v is None or (_number(v) and (low is None or v >= low) and (high is None or v <= high)) for v in values)
    return ok


def _estimate(low: float | None, high: float | None) -> Callable[[Any], bool]:
    """A check of a volume estimate: mean and ci95 in range (or null), per-episode values in range."""
    def ok(estimate: Any) -> bool:
        return (isinstance(estimate, dict) and _numbers(low, high)([estimate.get("mean")])
                and _optional_nonnegative(estimate.get("ci95")) and _optional_nonnegative(estimate.get("mc_se", 0))
                and _numbers(low, high)(estimate.get("per_episode")))
    return ok


def _matched(head: dict) -> bool:
    """A head's optional `matched` comparison (G&C at its own loss): absent, or its estimates in range."""
    m = head.get("matched", _MISSING)
    return m is _MISSING or (isinstance(m, dict) and m.get("loss_kind") in ("span_norm", "full_norm")
                             and _estimate(None, 0.0)(m.get("log10_volume")) and _estimate(0.0, 1.0)(m.get("expected_accuracy"))
                             and _estimate(0.0, None)(m.get("loss")) and isinstance(m.get("percentile"), dict)
                             and _numbers(0.0, 100.0)([m["percentile"].get("mean")])
                             and _numbers(0.0, 100.0)(m.get("per_episode_percentile")))


VOLUME_CHECKS: tuple[Check, ...] = (
    ("schema", lambda v: v == "fewshot.volume/1", "'fewshot.volume/1'"),
    ("episodes", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    ("stalled_episodes", lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    ("log10_volume", _estimate(None, 0.0), "an estimate of a log10 probability (<= 0)"),
    ("expected_accuracy", _estimate(0.0, 1.0), "an estimate of an accuracy in [0, 1]"),
    *((key, _estimate(None, 0.0), "an estimate of a log10 probability (<= 0)")
      for key in ("log10_volume_good", "log10_volume_poisoned")),
    ("log10_good_over_poisoned", _estimate(None, None), "an estimate"),
    # Issue 19's weight-space model; absent in files written before it (then `linear`).
    ("prior.model", lambda v: v in ("linear", "mlp"), "'linear' or 'mlp'"),
    ("prior.width", lambda v: v is None or (_integer(v) and v >= 1), "null or an integer >= 1 (hidden units)"),
    ("accuracy_quantiles.q", _numbers(0.0, 1.0, length=True), "a list of levels in [0, 1]"),
    ("accuracy_quantiles.mean_over_episodes", _numbers(0.0, 1.0, length=True), "a list of accuracies in [0, 1]"),
    ("accuracy_distribution.accuracy", _numbers(0.0, 1.0, length=True), "a list of accuracies in [0, 1]"),
    ("accuracy_distribution.mass", _numbers(0.0, 1.0, length=True), "a list of fractions in [0, 1]"),
    ("heads", lambda v: isinstance(v, dict) and all(
        isinstance(h, dict) and _fraction(h.get("accuracy_mean")) and isinstance(h.get("percentile"), dict)
        and _numbers(0.0, 100.0)([h["percentile"].get("mean")]) and _numbers(0.0, 100.0)(h.get("per_episode_percentile"))
        and _matched(h) for h in v.values()),
     "an object of heads, each with accuracy_mean in [0, 1], percentiles in [0, 100] and, if `matched`, its "
     "loss_kind, a log10 probability (<= 0), an accuracy in [0, 1], a loss (>= 0) and percentiles in [0, 100]"),
)
VOLUME_OPTIONAL = ("log10_volume_good", "log10_volume_poisoned", "log10_good_over_poisoned")


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests lists and objects deeper than `limit` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def content_digest(doc: dict) -> str:
    """sha256 of the document without its `digest` key, as canonical JSON: written into every
    results file and compared on read, so an edit of any section (volume, diagnostics, which head
    is the oracle, ...), not only of the statistics recomputed here, is found."""
    body = {key: value for key, value in doc.items() if key != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
                          .encode("utf-8")).hexdigest()


def _volume_problems(doc: dict) -> list[str]:
    """What in the `volume` section has a wrong type, an impossible value, or another length than
    its episodes (empty when the document has no volume section)."""
    volume = doc.get("volume", _MISSING)
    if volume is _MISSING:
        return []
    if not isinstance(volume, dict):
        return ["volume is not an object"]
    problems = _apply(VOLUME_CHECKS, volume, "volume.", optional=(*VOLUME_OPTIONAL, "prior.model", "prior.width"))
    count = volume.get("episodes")
    for key in ("log10_volume", "expected_accuracy", *VOLUME_OPTIONAL):
        values = volume[key].get("per_episode") if isinstance(volume.get(key), dict) else None
        if isinstance(values, list) and _integer(count) and len(values) != count:
            problems.append(f"volume.{key}.per_episode has {len(values)} entries for {count} episodes")
    heads = volume.get("heads") if isinstance(volume.get("heads"), dict) else {}
    names = {head.get("name") for head in doc.get("heads", []) if isinstance(head, dict)}
    problems += [f"volume.heads names {name!r}, which is not a head of this file" for name in heads if name not in names]
    for name, head in heads.items():
        matched = head.get("matched") if isinstance(head, dict) and isinstance(head.get("matched"), dict) else {}
        for key in ("log10_volume", "expected_accuracy", "loss"):
            values = matched[key].get("per_episode") if isinstance(matched.get(key), dict) else None
            if isinstance(values, list) and _integer(count) and len(values) != count:
                problems.append(f"volume.heads.{name}.matched.{key}.per_episode has {len(values)} entries for "
                                f"{count} episodes")
    return problems


def _get(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def _apply(checks: tuple[Check, ...], tree: Any, prefix: str, optional: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for key, ok, rule in checks:
        value = _get(tree, key)
        if value is _MISSING:
            if key not in optional:
                problems.append(f"{prefix}{key} is missing")
        elif not ok(value):
            problems.append(f"{prefix}{key} is {value!r:.40}, not {rule}")
    return problems


def type_problems(doc: dict) -> list[str]:
    """What in a results document has a wrong type or an impossible value (empty when none)."""
    problems = _non_finite(doc, "")
    problems += _apply(DOC_CHECKS, doc, "")
    heads = doc.get("heads")
    if not isinstance(heads, list) or not heads or not all(isinstance(head, dict) for head in heads):
        return problems + ["heads is not a non-empty list of objects"]
    for i, head in enumerate(heads):
        problems += _apply(HEAD_CHECKS, head, f"heads.{i}.", optional=("accuracy.std", "diagnostics", "absent_diagnostics",
                                                                        *PER_EPISODE_RECORDS, *RUNTIME_RECORDS))
        both = set(head.get("absent_diagnostics") or {}) & set(head.get("diagnostics") or {}) \
            if isinstance(head.get("absent_diagnostics"), dict) and isinstance(head.get("diagnostics"), dict) else set()
        problems += [f"heads.{i}.diagnostics.{name} is recorded, but heads.{i}.absent_diagnostics says the head "
                     f"cannot have it" for name in sorted(both)][:1]
        if isinstance(head.get("per_episode_runtimes"), list) and isinstance(head.get("runtime_targets"), list):
            problems += [f"heads.{i}.per_episode_runtimes.{e} has {len(row)} entries for "
                         f"{len(head['runtime_targets'])} targets" for e, row in enumerate(head["per_episode_runtimes"])
                         if isinstance(row, list) and len(row) != len(head["runtime_targets"])][:1]
        episodes = len(head["per_episode"]) if isinstance(head.get("per_episode"), list) else None
        problems += [f"heads.{i}.{key} has {len(head[key])} entries for {episodes} episodes"
                     for key in PER_EPISODE_RECORDS
                     if isinstance(head.get(key), list) and episodes is not None and len(head[key]) != episodes]
        accuracy = head.get("accuracy") if isinstance(head.get("accuracy"), dict) else {}
        if accuracy.get("mean") is None and accuracy.get("n") != 0:  # no mean only when no episode counts
            problems.append(f"heads.{i}.accuracy.mean is None, but its n is {accuracy.get('n')!r}")
    count = _get(doc, "episodes.count")
    if count is not _MISSING and not (_integer(count) and count >= 1):
        problems.append(f"episodes.count is {count!r:.40}, not an integer >= 1")
    elif count is not _MISSING:
        problems += [f"heads.{i}.per_episode has {len(head['per_episode'])} entries, but episodes.count is {count}"
                     for i, head in enumerate(heads)
                     if isinstance(head.get("per_episode"), list) and len(head["per_episode"]) != count]
    run = doc.get("run", _MISSING)
    if run is not _MISSING and not (isinstance(run, dict) and (run.get("label") is None or isinstance(run["label"], str))):
        problems.append(f"run is {run!r:.40}, not an object with a label (a string or null)")
    problems += _volume_problems(doc)
    names = [head.get("name") for head in heads]
    if len(set(map(str, names))) != len(names):
        problems.append(f"head names repeat ({names})")
    lengths = {len(head["per_episode"]) for head in heads if isinstance(head.get("per_episode"), list)}
    if len(lengths) > 1:
        problems.append(f"heads have different numbers of episodes ({sorted(lengths)})")
    for i, comparison in enumerate(doc.get("comparisons") if isinstance(doc.get("comparisons"), list) else []):
        if isinstance(comparison, dict):
            problems += _apply(COMPARISON_CHECKS, comparison, f"comparisons.{i}.")
    return problems


def _differences(expected: Any, stored: Any, where: str) -> list[str]:
    """Where a stored statistic differs from its recomputed value."""
    if isinstance(expected, dict):
        if not isinstance(stored, dict):
            return [f"{where} is not an object"]
        return [p for key, value in expected.items()
                for p in _differences(value, stored.get(key, _MISSING), f"{where}.{key}")]
    if isinstance(expected, float) and _number(stored):
        if abs(expected - stored) <= TOLERANCE * max(1.0, abs(expected)):
            return []
    elif expected == stored and type(expected) is type(stored):
        return []
    shown = "missing" if stored is _MISSING else f"{stored!r:.24}"
    return [f"{where} is {shown} but its per-episode values give {expected!r:.24}"]


def head_statistics(head: dict) -> dict:
    """The statistics of one head computed from its stored per-episode values alone.

    `build_results` (`fewshot.results.document`) and `recomputed_problems` both call this, so a reader recomputes exactly what the
    writer computed; add a new per-episode statistic here and both follow. With fitted flags the
    head also gets its fitted summary, and its accuracy counts only fitted episodes when it drops
    failures (`on_failure: drop`); with guess & check counts, the pooled volume.

    Args:
        head: a head's document with at least `per_episode` (as stored).
    """
    values, fitted = head["per_episode"], head.get("per_episode_fitted")
    if fitted is None:
        stats = {"accuracy": summarize(values)}
    else:
        drop = isinstance(head.get("config"), dict) and head["config"].get("on_failure") == "drop"
        stats = {"fitted": fitted_summary(fitted, head.get("per_episode_restarts")),
                 "accuracy": fitted_accuracy(values, fitted, drop)}
    if "per_episode_fits" in head and "per_episode_tested" in head:
        stats["volume"] = pooled_volume(head["per_episode_fits"], head["per_episode_tested"])
    profile = head_runtime_profile(head)
    if profile is not None:
        stats["runtime_profile"] = profile
    return stats


def _kept(head_doc: dict) -> list[int] | None:
    """The episodes a head's mean counts: its fitted ones when it drops failures, else all (None)."""
    return head_doc.get("per_episode_fitted") if head_doc["accuracy"].get("over") == "fitted" else None


def comparison_statistics(heads: Sequence[dict]) -> list[dict]:
    """Paired comparisons of every pair of heads (config order), on the episodes both count."""
    return [compare_shared(heads[i]["per_episode"], heads[j]["per_episode"], _kept(heads[i]), _kept(heads[j]),
                           a_name=heads[i]["name"], b_name=heads[j]["name"])
            for i, j in itertools.combinations(range(len(heads)), 2)]


def recomputed_problems(doc: dict) -> list[str]:
    """Statistics of a (well-typed) document that disagree with its per-episode values."""
    problems = [p for i, head in enumerate(doc["heads"])
                for p in _differences(head_statistics(head), head, f"heads.{i}")]
    expected = comparison_statistics(doc["heads"])
    if len(expected) != len(doc["comparisons"]):
        problems.append(f"comparisons has {len(doc['comparisons'])} entries, but its {len(doc['heads'])} heads "
                        f"make {len(expected)} pairs")
    else:
        problems += [p for i, (want, have) in enumerate(zip(expected, doc["comparisons"]))
                     for p in _differences(want, have, f"comparisons.{i}")]
    if "band_table" in doc:
        problems += _differences(band_table(doc["heads"]), doc["band_table"], "band_table")
    return problems


def verify_results(doc: dict, path: str | Path) -> None:
    """Refuse a results document with wrong types or statistics its per-episode values contradict.

    Args:
        doc: the parsed document (schema and required keys already checked).
        path: where it was read from, named in the error.
    """
    regenerate = "Regenerate it with `fewshot evaluate` (or `fewshot benchmark`), or leave it out."
    problems = type_problems(doc)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED]) + (f" (and {len(problems) - MAX_LISTED} more)"
                                                    if len(problems) > MAX_LISTED else "")
        raise fail(f"{str(path)!r} is not a well-formed fewshot results file: {listed}.", regenerate)
    problems = recomputed_problems(doc)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED]) + (f" (and {len(problems) - MAX_LISTED} more)"
                                                    if len(problems) > MAX_LISTED else "")
        raise fail(f"The results file {str(path)!r} disagrees with its own per-episode values, so it was "
                   f"edited or damaged after it was written: {listed}.", regenerate)
    if "digest" in doc and doc["digest"] != content_digest(doc):  # files of older versions have none
        raise fail(f"The results file {str(path)!r} was edited or damaged after it was written: its contents no "
                   "longer match the digest it was written with (a section that is not recomputed from the "
                   "per-episode values changed, such as volume, diagnostics, a head's config or oracle flag).",
                   regenerate)
