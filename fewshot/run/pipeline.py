"""From a checkpoint to results files: features -> episodes -> heads -> statistics -> export."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from backbones.checkpoint import checkpoint_sha256, load_checkpoint
from backbones.features import extract_features
from episodes import EpisodeSampler, FewShotDataset, resolve_data_root
from episodes.errors import fail
from episodes.io import atomic_write_bytes, atomic_write_text
from fewshot.config import Config, config_to_dict
from backbones.distributed import Ranks, barrier, gather_objects
from fewshot.run.evaluate import evaluate_heads
from fewshot.run.features import FeatureCache, cache_key
from fewshot.report.leaderboard import ORACLE_MARK, merge, to_markdown
from fewshot.report.plot import render_accuracy
from fewshot.report.plot_runtime import has_runtimes, render_runtime
from fewshot.report import write_report
from fewshot.results.document import build_results, results_filename, write_csv, write_results
from fewshot.run.runlock import claimed_results, foreign_results
from fewshot.run.volume_analysis import analyze_volume
from fewshot.report.volume_tables import render_volume

IMAGE_PREPROCESSING = "backbones.augment.to_float/v1"


@dataclass
class RunContext:
    """Where and how a pipeline command runs.

    Args:
        output_dir: run directory for results files.
        device: torch device of the backbone and heads.
        data_root: dataset root (the feature cache lives in `<data_root>/features`).
        console: where progress and tables go.
        ranks: this process's place among distributed ranks.
        resume: keep results files already written for the same episodes, checkpoint and config.
        force: replace results files of another run instead of refusing.
        label: the run's name in leaderboards (stored in results as `run.label`).
    """

    output_dir: Path
    device: str
    data_root: Path | None
    console: Console
    ranks: Ranks
    resume: bool = False
    force: bool = False
    label: str | None = None


def split_features(config: Config, dataset: FewShotDataset, model: torch.nn.Module, sha256: str,
                   run: RunContext) -> torch.Tensor:
    """Raw backbone features of the evaluated split, from the cache when possible."""
    split = dataset.split(config.episodes.split)
    key = cache_key(checkpoint_sha256=sha256, split=split,
                    split_name=config.episodes.split, preprocessing=IMAGE_PREPROCESSING)
    cache = FeatureCache(resolve_data_root(run.data_root) / "features",
                         log=lambda message: run.console.print(f"[dim]{message}[/]"))

    def compute() -> torch.Tensor:
        run.console.print(f"extracting features of {len(split)} {config.episodes.split} images")
        return extract_features(model, split.images, batch_size=config.features.batch_size, device=run.device)

    # Rank 0 fills the cache first so that the other ranks read it instead of recomputing.
    features = None
    if run.ranks.is_main:
        features, _ = cache.get_or_compute(key, compute)
    barrier(run.ranks)
    if features is None:
        features, _ = cache.get_or_compute(key, compute)
    if not torch.isfinite(features).all():
        raise fail("The backbone produced NaN or infinite features.",
                   "The checkpoint is broken (diverged training?): pretrain again with a lower "
                   "pretrain.lr, or pass another --checkpoint.")
    return features


def episode_samplers(config: Config, dataset: FewShotDataset) -> dict[int, EpisodeSampler]:
    """One sampler per k_shot setting; building them checks the episodes are possible."""
    split = dataset.split(config.episodes.split)
    settings = config.episodes
    return {k_shot: EpisodeSampler(split.labels, settings.n_way, k_shot, settings.n_query, settings.seed)
            for k_shot in settings.k_shot}


@dataclass
class Plan:
    """One results file a run writes: its shot setting, episodes, the sections that say what ran,
    and the document kept from an earlier run (on `--resume`), if any."""

    k_shot: int
    episodes: Any
    path: Path
    sections: dict[str, dict]
    kept: dict | None


def plan_results(config: Config, dataset: FewShotDataset, run: RunContext, sha: str | None) -> list[Plan]:
    """Claim every results file the run would write, before any work.

    A results file already in the folder is kept (`--resume`) only when every section that says
    what ran (config, dataset with its fingerprint, episodes, checkpoint) equals this run's; a
    file of another run, or one this run would not write (other shot settings), stops the run
    unless `--force`. Called before pretraining with `sha=None` (the checkpoint is not known yet:
    the rest is checked, so a refused `--resume` changes nothing), and again with the checkpoint.

    Args:
        config, dataset: the run's config and loaded dataset.
        run: output folder, resume and force.
        sha: sha256 of the checkpoint, or None before pretraining.
    """
    settings = config.episodes
    split = dataset.split(settings.split)
    plans = []
    for k_shot, sampler in episode_samplers(config, dataset).items():
        episodes = sampler.sample(settings.count)
        path = run.output_dir / results_filename(settings.n_way, k_shot)
        sections = {"config": config_to_dict(config),
                    "dataset": {"name": dataset.name, "split": settings.split, "fingerprint": split.fingerprint},
                    "episodes": {"n_way": settings.n_way, "k_shot": k_shot, "n_query": settings.n_query,
                                 "count": settings.count, "seed": settings.seed,
                                 "fingerprint": episodes.fingerprint}}
        identity = {**sections, **({"backbone": {"checkpoint_sha256": sha}} if sha is not None else {})}
        plans.append(Plan(k_shot, episodes, path, sections,
                          claimed_results(path, identity, resume=run.resume, force=run.force)))
    others = foreign_results(run.output_dir, [plan.path.name for plan in plans])
    if others and not run.force:
        raise fail(f"The output directory {str(run.output_dir)!r} holds results this run would not replace "
                   f"({', '.join(others[:4])}): the folder would mix two runs.",
                   "Pass another --output-dir, or --force to replace that run's results.")
    return plans


def evaluate_checkpoint(config: Config, dataset: FewShotDataset, checkpoint: Path,
                        run: RunContext, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate every head on every configured episode setting; write and return the results.

    Args:
        config: the run config (dataset, episodes, features, heads).
        dataset: the loaded dataset.
        checkpoint: the backbone checkpoint.
        run: output directory, device, console, ranks.
        extra: more top-level sections of every results document (e.g. `tuning`).
    """
    if config.volume.enabled:
        config.volume.check("volume")  # before any work, so bad settings leave no partial output
    sha = checkpoint_sha256(checkpoint)
    settings = config.episodes
    plans = plan_results(config, dataset, run, sha)  # another run's file stops us here
    model, info = load_checkpoint(checkpoint, device=run.device)
    features = split_features(config, dataset, model, sha, run)
    del model  # free the backbone (GPU memory) before the heads run
    docs = []
    for plan in plans:
        k_shot, episodes, path = plan.k_shot, plan.episodes, plan.path
        if plan.kept is not None:
            run.console.print(f"{path.name} already complete for these episodes; keeping it")
            docs.append(plan.kept)
            continue
        with _progress(run) as progress:
            tasks = {name: progress.add_task(f"{settings.n_way}-way {k_shot}-shot {name}",
                                             total=len(episodes)) for name in config.heads}
            heads = evaluate_heads(features, episodes, config.heads, config.features, seed=settings.seed,
                                   device=run.device, rank=run.ranks.rank, world_size=run.ranks.world_size,
                                   gather=lambda value: gather_objects(value, run.ranks),
                                   on_chunk=lambda name, done: progress.advance(tasks[name], done))
        doc = build_results(
            config=plan.sections["config"], dataset=plan.sections["dataset"],
            backbone={"name": info["backbone"], "config": info["backbone_config"],
                      "checkpoint_sha256": sha, "checkpoint": str(checkpoint)},
            episodes=plan.sections["episodes"], heads=heads)
        if config.volume.enabled:
            doc["volume"] = analyze_volume(features, episodes, heads, config.features, config.volume,
                                           seed=settings.seed, device=run.device, rank=run.ranks.rank,
                                           world_size=run.ranks.world_size,
                                           gather=lambda value: gather_objects(value, run.ranks))
        doc["run"] = {"label": run.label}
        doc.update(extra or {})
        if run.ranks.is_main:
            write_results(path, doc)
        docs.append(doc)
    if run.ranks.is_main:
        export(docs, run)
    return docs


def export(docs: list[dict[str, Any]], run: RunContext) -> None:
    """results.csv, leaderboard.md, accuracy.png and a summary table of a run's results."""
    write_csv(run.output_dir / "results.csv", docs)
    atomic_write_text(run.output_dir / "leaderboard.md", to_markdown(merge(docs), docs))
    figures = {"accuracy": render_accuracy(docs, "png")}
    if has_runtimes(docs):
        figures["runtime"] = render_runtime(docs)
    if any("volume" in doc for doc in docs):
        figures["volume"] = render_volume(docs, "png")
    for name, png in figures.items():
        atomic_write_bytes(run.output_dir / f"{name}.png", png)
    write_report(docs, run.output_dir / "report.html", figures=figures)   # the same plots, drawn once
    table = Table(title=f"Results in {run.output_dir}")
    for column in ("setting", "head", "accuracy %", "± ci95", "fit s"):
        table.add_column(column, justify="right" if column != "head" else "left")
    for doc in docs:
        setting = f"{doc['episodes']['n_way']}-way {doc['episodes']['k_shot']}-shot"
        for head in sorted(doc["heads"], key=lambda h: -(h["accuracy"]["mean"] or -1.0)):
            accuracy = head["accuracy"]
            name = f"{head['name']} {ORACLE_MARK}" if head.get("oracle") else head["name"]
            table.add_row(setting, name, "n/a" if accuracy["mean"] is None else f"{100 * accuracy['mean']:.2f}",
                          f"{100 * (accuracy['ci95'] or 0):.2f}", f"{head['fit_seconds']:.2f}")
    run.console.print(table)


def _progress(run: RunContext) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=run.console,
                    disable=run.console.quiet or not run.ranks.is_main)
