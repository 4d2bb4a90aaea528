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

import itertools
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from episodes.errors import fail
from fewshot.results.bands import band_table
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
    ("per_episode_fitted", lambda v: isinstance(v, list) and all(flag in (0, 1) and _integer(flag) for flag in v),
     "a list of 0/1 flags"),
    *((key, lambda v: isinstance(v, list) and all(_integer(c) and c >= 0 for c in v), "a list of integers >= 0")
      for key in ("per_episode_restarts", "per_episode_fits", "per_episode_tested")),
)
PER_EPISODE_RECORDS = ("per_episode_fitted", "per_episode_restarts", "per_episode_fits", "per_episode_tested")
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
        problems += _apply(HEAD_CHECKS, head, f"heads.{i}.", optional=("accuracy.std", "diagnostics",
                                                                        *PER_EPISODE_RECORDS))
        episodes = len(head["per_episode"]) if isinstance(head.get("per_episode"), list) else None
        problems += [f"heads.{i}.{key} has {len(head[key])} entries for {episodes} episodes"
                     for key in PER_EPISODE_RECORDS
                     if isinstance(head.get(key), list) and episodes is not None and len(head[key]) != episodes]
        accuracy = head.get("accuracy") if isinstance(head.get("accuracy"), dict) else {}
        if accuracy.get("mean") is None and accuracy.get("n") != 0:  # no mean only when no episode counts
            problems.append(f"heads.{i}.accuracy.mean is None, but its n is {accuracy.get('n')!r}")
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
