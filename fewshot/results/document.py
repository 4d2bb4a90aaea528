"""Results files (schema `fewshot.results/1`, DESIGN.md "Results files") and `results.csv`.

One JSON document per episode setting, `results-{n_way}way-{k_shot}shot.json`. Accuracies are
fractions in [0, 1]. Per-episode accuracies are stored rounded to 1e-6 (dropping float32 noise
such as 0.8399999737) and every statistic in the file is computed from the stored values, so
anyone can recompute the means, intervals and comparisons from the file alone.

Example:
    >>> doc = build_results(config=asdict(config), dataset={...}, backbone={...},
    ...                     episodes={...}, heads=[HeadResult("sgd", {}, accuracy, 0.3)])
    >>> write_results(run_dir / results_filename(5, 5), doc)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from episodes.errors import fail
from episodes.io import atomic_write_text
from fewshot import __version__
from fewshot.results.bands import band_table
from fewshot.results.stats import CI_FORMULA, CI_METHOD, summarize
from fewshot.results.verify import (MAX_DEPTH, comparison_statistics, content_digest, head_statistics,
                                    too_deep, verify_results)

SCHEMA = "fewshot.results/1"
STORED_DECIMALS = 6
CSV_COLUMNS = ("dataset", "n_way", "k_shot", "head", "accuracy_pct", "ci95_pct", "n", "fit_seconds",
               "episodes_fingerprint")
# Keys a results document must have, as dotted paths; "heads.*" applies to every head.
REQUIRED_KEYS = ("suite", "config", "hardware", "dataset.name", "dataset.fingerprint", "backbone",
                 "episodes.n_way", "episodes.k_shot", "episodes.fingerprint", "heads", "comparisons",
                 "heads.*.name", "heads.*.accuracy.mean", "heads.*.accuracy.ci95", "heads.*.accuracy.n",
                 "heads.*.per_episode", "heads.*.fit_seconds")


@dataclass
class HeadResult:
    """What the evaluator measured for one head on one episode setting.

    Args:
        name: registered head name.
        config: the head's settings, JSON-serializable.
        per_episode: query accuracy in [0, 1] per episode, shape [E].
        fit_seconds: wall time spent fitting this head on all E episodes.
        diagnostics: per-episode measurements of the fitted heads (norm, margin, ...), each [E].
        oracle: the head saw the queries at fit time (a reference row, never ranked).
        absent_diagnostics: diagnostic name -> why the head's model cannot have it (e.g. a linear-only
            one for a network head); stored as such, never as a 0 among `diagnostics`.
    """

    name: str
    config: dict
    per_episode: torch.Tensor
    fit_seconds: float
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    oracle: bool = False
    absent_diagnostics: dict[str, str] = field(default_factory=dict)


def results_filename(n_way: int, k_shot: int) -> str:
    """`results-{n_way}way-{k_shot}shot.json`."""
    return f"results-{n_way}way-{k_shot}shot.json"


def stored_values(values: torch.Tensor | Sequence[float]) -> list[float]:
    """Per-episode values as they are stored: Python floats rounded to 1e-6."""
    tensor = torch.as_tensor(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                             dtype=torch.float64).flatten()
    return [round(value, STORED_DECIMALS) for value in tensor.tolist()]


def _summarize_diagnostic(values: torch.Tensor) -> dict:
    """Mean and CI95 over the episodes where the diagnostic is finite (a head may fail some)."""
    finite = [value for value in stored_values(values) if math.isfinite(value)]
    if not finite:
        return {"mean": None, "ci95": None, "n": 0}
    summary = summarize(finite)
    return {"mean": summary["mean"], "ci95": summary["ci95"], "n": summary["n"]}


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, or None when it is not a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


# Instruction-set levels, highest first: the CPU kernels (oneDNN, ATen) take other float paths on each,
# so a checkpoint pretrained on one level can differ from one pretrained on another.
ISA_LEVELS = (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse4.2", "sse4_2"))
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def describe_cpu(cpuinfo: str | None = None) -> dict:
    """The CPU model, its instruction-set level (from /proc/cpuinfo flags) and what torch uses.

    Args:
        cpuinfo: the text of /proc/cpuinfo (default: read it; empty where there is none).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu_model": fields.get("model name") or platform.processor() or None,
            "cpu_isa": next((name for name, flag in ISA_LEVELS if flag in flags), "unknown" if not flags else "baseline"),
            "cpu_flags": [flag for flag in ISA_FLAGS if flag in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY")}


def describe_hardware() -> dict:
    """Where the numbers were measured: platform, CPU model and instruction set, torch, the CUDA device if any."""
    cuda = torch.cuda.is_available()
    return {"platform": platform.platform(), "machine": platform.machine(), **describe_cpu(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name(0) if cuda else None}


def build_results(*, config: dict, dataset: dict, backbone: dict, episodes: dict,
                  heads: list[HeadResult], hardware: dict | None = None) -> dict:
    """Assemble a `fewshot.results/1` document.

    Args:
        config: the whole run config as a plain dict.
        dataset: at least `name`, `split`, `fingerprint`.
        backbone: at least `name`, `checkpoint_sha256`.
        episodes: `n_way`, `k_shot`, `n_query`, `count`, `seed`, `fingerprint`.
        heads: one result per head, in config order; all on the same episodes.
        hardware: defaults to `describe_hardware()`.
    """
    if not heads:
        raise ValueError("a results document needs at least one head")
    stored = [stored_values(head.per_episode) for head in heads]
    if len({len(values) for values in stored}) > 1:
        raise ValueError(f"heads were evaluated on different numbers of episodes: {[len(v) for v in stored]}")
    head_docs = [{"name": head.name, "config": head.config, "per_episode": values,
                  "fit_seconds": float(head.fit_seconds),
                  "diagnostics": {key: _summarize_diagnostic(value) for key, value in head.diagnostics.items()
                                  if value.dim() == 1},  # [E, T] runtimes are stored per episode instead
                  **({"absent_diagnostics": dict(sorted(head.absent_diagnostics.items()))}
                     if head.absent_diagnostics else {}),
                  **({"oracle": True} if head.oracle else {})}
                 for head, values in zip(heads, stored)]
    for head, doc in zip(heads, head_docs):
        doc.update(stored_fit_fields(head))
    head_docs = [{**{k: v for k, v in doc.items() if k in ("name", "config")}, **head_statistics(doc), **doc}
                 for doc in head_docs]
    comparisons = comparison_statistics(head_docs)
    bands = band_table(head_docs)
    return {"schema": SCHEMA, **({"band_table": bands} if bands else {}),
            "suite": {"version": __version__, "git_commit": git_commit()},
            "config": config, "hardware": describe_hardware() if hardware is None else hardware,
            "dataset": dataset, "backbone": backbone, "episodes": episodes,
            "ci_method": CI_METHOD, "ci_formula": CI_FORMULA,
            "heads": head_docs, "comparisons": comparisons}


def stored_fit_fields(head: HeadResult) -> dict:
    """The per-episode fit records a head reports, as stored: fitted flags and restarts (heads with
    a fit protocol), and guess & check's fitted / tested draws.

    Args:
        head: the head's result (its diagnostics carry `fit_fitted` or `fit_failed`,
            `fit_restarts`, `fit_fits` and `fit_tested` when the head reports them).
    """
    diagnostics, fields = head.diagnostics, {}
    if "fit_fitted" in diagnostics or "fit_failed" in diagnostics:
        flags = diagnostics["fit_fitted"] if "fit_fitted" in diagnostics else 1 - diagnostics["fit_failed"]
        fields["per_episode_fitted"] = [int(flag > 0.5) for flag in flags.tolist()]
        if "fit_restarts" in diagnostics:
            fields["per_episode_restarts"] = [int(r) for r in diagnostics["fit_restarts"].tolist()]
    if "fit_runtimes" in diagnostics and "targets" in head.config:  # evaluations to the loss targets
        fields["runtime_targets"] = [float(target) for target in head.config["targets"]]
        fields["runtime_dimension"] = int(diagnostics["fit_search_dimension"].max()) \
            if "fit_search_dimension" in diagnostics else 0
        fields["per_episode_evaluations"] = [int(v) for v in diagnostics["fit_evaluations"].tolist()]
        fields["per_episode_runtimes"] = [[int(v) if math.isfinite(v) else None for v in row]
                                          for row in diagnostics["fit_runtimes"].tolist()]
    if "fit_fits" in diagnostics and "fit_tested" in diagnostics:  # guess & check draws, pooled
        for key in ("fits", "tested"):
            fields[f"per_episode_{key}"] = [int(v) for v in diagnostics[f"fit_{key}"].tolist()]
    return fields


def write_results(path: str | os.PathLike, doc: dict) -> Path:
    """Atomically write a results document as JSON (NaN or infinity is an error, not `NaN`), with
    the digest of its contents (`fewshot.results.verify.content_digest`) that the reader checks."""
    doc["digest"] = content_digest(doc)
    return atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _lookup(doc: object, dotted: str) -> list[str]:
    """The concrete dotted paths under which `dotted` is missing in `doc` ("*" walks a list)."""
    head, _, rest = dotted.partition(".")
    if head == "*":
        items = list(enumerate(doc)) if isinstance(doc, list) else []
        return [f"{i}.{missing}" for i, item in items for missing in (_lookup(item, rest) if rest else [])]
    if not isinstance(doc, dict) or head not in doc:
        return [dotted]
    return [f"{head}.{missing}" for missing in _lookup(doc[head], rest)] if rest else []


def read_results(path: str | os.PathLike) -> dict:
    """Read and check a results file; bad files raise `UserError` saying what to do.

    Args:
        path: a `results-*.json` file written by `write_results`.
    """
    path = Path(path)
    regenerate = "Regenerate it with `fewshot evaluate` (or `fewshot benchmark`), or leave it out."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(f"The results file {str(path)!r} does not exist.",
                   "Check the path: runs write results-<N>way-<K>shot.json into their output folder.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"The results file {str(path)!r} cannot be read ({error}).", regenerate) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(f"{str(path)!r} is not valid JSON ({error.msg} at line {error.lineno}); it is corrupted "
                   "or was cut short.", regenerate) from None
    except (ValueError, RecursionError) as error:  # a 5,000-digit integer; lists nested thousands deep
        raise fail(f"{str(path)!r} is not a results file: it holds a value JSON readers refuse "
                   f"({str(error).splitlines()[0][:80] or type(error).__name__}).", regenerate) from None
    if too_deep(doc):
        raise fail(f"{str(path)!r} is not a results file: its values are nested deeper than {MAX_DEPTH} levels.",
                   regenerate)
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema is None:
        raise fail(f"{str(path)!r} is not a fewshot results file (it has no \"schema\" key).",
                   "Pass results-*.json files written by `fewshot benchmark` or `fewshot evaluate`.")
    if schema != SCHEMA:
        raise fail(f"{str(path)!r} has schema {schema!r}, but fewshot {__version__} reads {SCHEMA!r}.",
                   "Use the fewshot version that wrote it, or re-run the evaluation with this version.")
    missing = [m for key in REQUIRED_KEYS for m in _lookup(doc, key)]
    if missing:
        raise fail(f"{str(path)!r} is an incomplete {SCHEMA} file: it lacks {', '.join(missing)}.", regenerate)
    wrong = _wrong_types(doc)
    if wrong:
        raise fail(f"{str(path)!r} is not a well-formed {SCHEMA} file: {', '.join(wrong)}.", regenerate)
    verify_results(doc, path)  # every type, and every statistic recomputed from the per-episode values
    return doc


def _wrong_types(doc: dict) -> list[str]:
    """What in a results document has the wrong type (sections, heads, accuracies)."""
    wrong = [f"{key} is not an object" for key in ("suite", "config", "hardware", "dataset", "backbone", "episodes")
             if not isinstance(doc[key], dict)]
    if not isinstance(doc["heads"], list) or not doc["heads"]:
        return wrong + ["heads is not a non-empty list"]
    for i, head in enumerate(doc["heads"]):
        mean = head["accuracy"]["mean"] if isinstance(head, dict) and isinstance(head["accuracy"], dict) else None
        if mean is None and isinstance(head, dict) and head["accuracy"].get("n") == 0:
            continue  # a head that dropped every episode (none fitted) has no mean
        if not isinstance(mean, (int, float)) or isinstance(mean, bool):
            wrong.append(f"heads.{i}.accuracy.mean is not a number")
    return wrong


def find_results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the `results-*.json` files anywhere under the given folders.

    Args:
        paths: files and/or folders (e.g. a run folder, or `runs/` holding many).
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(path.rglob("results-*.json"))
            if not inside:
                raise fail(f"The folder {str(path)!r} holds no results-*.json files.",
                           "Pass a run folder written by `fewshot benchmark`, or the results files themselves.")
            found.extend(inside)
        else:
            found.append(path)
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in found:  # the same file named twice (or also inside a named folder) counts once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with a header row; `None` becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    return buffer.getvalue()


def percent(value: float | None) -> float | None:
    """A fraction as a percentage rounded to 4 decimals (None stays None)."""
    return None if value is None else round(100.0 * value, 4)


def write_csv(path: str | os.PathLike, docs: Sequence[dict]) -> Path:
    """Atomically write `results.csv`: one row per head per results document.

    Args:
        path: destination, usually `<run dir>/results.csv`.
        docs: results documents, e.g. one per shot setting of a run.
    """
    rows = [(doc["dataset"]["name"], doc["episodes"]["n_way"], doc["episodes"]["k_shot"], head["name"],
             percent(head["accuracy"]["mean"]), percent(head["accuracy"]["ci95"]), head["accuracy"]["n"],
             round(head["fit_seconds"], 6), doc["episodes"]["fingerprint"])
            for doc in docs for head in doc["heads"]]
    return atomic_write_text(path, csv_text(CSV_COLUMNS, rows))
