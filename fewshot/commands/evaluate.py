"""`fewshot evaluate --checkpoint PATH`: the second half of the benchmark (features -> results)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from episodes import FewShotDataset, load_dataset
from episodes.errors import fail
from fewshot.commands.options import (add_run_options, command, console_for, load_run_config, resolve_device,
                                      resolve_output_dir)
from fewshot.config import Config
from backbones import distributed

if TYPE_CHECKING:  # the pipeline imports torch-heavy modules: load them only when a command runs
    from fewshot.run.pipeline import RunContext


def add_evaluate_options(parser: argparse.ArgumentParser, checkpoint_required: bool) -> None:
    add_run_options(parser)
    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help="backbone checkpoint (from `fewshot pretrain`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output-dir, keeping finished work")
    parser.add_argument("--label", default=None, help="name of this run in leaderboards (default: config name "
                        "and dataset)")
    if not checkpoint_required:
        parser.add_argument("--retrain", action="store_true", help="pretrain even when the same pretraining "
                            "was done before (default: reuse its checkpoint from <data root>/checkpoints)")


def prepare_run(args: argparse.Namespace, checkpoint: Path | None = None
                ) -> tuple[Config, FewShotDataset, "RunContext"]:
    """Config, dataset, output directory, device and ranks of a pipeline command.

    Everything that can be wrong with the input is checked here (`fewshot.run.validate`: config,
    heads, device, data, checkpoint; then the output folder is claimed), before any output is
    written or any pretraining starts.

    Args:
        args: the parsed command line.
        checkpoint: the backbone to evaluate; None when the run pretrains one.
    """
    from backbones.checkpoint import checkpoint_sha256
    from fewshot.run.pipeline import RunContext, episode_samplers, plan_results
    from fewshot.run.validate import check_checkpoint, check_config, check_dataset
    if args.resume and not args.output_dir:
        raise fail("--resume continues an earlier run, but no run directory was given (without --output-dir "
                   "a new, empty folder would be used).", "Pass --output-dir with the folder of the run to continue.")
    config = load_run_config(args)
    warnings = check_config(config, pretraining=checkpoint is None)
    device = resolve_device(args)
    dataset = load_dataset(config.dataset.name, args.data_root, config.dataset.path, config.dataset.image_size)
    warnings += check_dataset(config, dataset)
    episode_samplers(config, dataset)
    if checkpoint is not None:
        warnings += check_checkpoint(config, checkpoint)
    ranks, device = distributed.join(device)
    output_dir = resolve_output_dir(args, config.name, ranks)
    console = console_for(args)
    for warning in warnings if ranks.is_main else []:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    run = RunContext(output_dir=output_dir, device=str(device), data_root=args.data_root, console=console,
                     ranks=ranks, resume=args.resume, force=getattr(args, "force", False), label=args.label)
    if run.resume:  # a results file of another run stops --resume now, before pretraining changes the folder
        plan_results(config, dataset, run, checkpoint_sha256(checkpoint) if checkpoint is not None else None)
    return config, dataset, run


def existing_checkpoint(path: str) -> Path:
    checkpoint = Path(path)
    if not checkpoint.is_file():
        raise fail(f"The checkpoint {path!r} does not exist.",
                   "Pass --checkpoint with a file written by `fewshot pretrain` (checkpoint-best.pt in its "
                   "run directory).")
    return checkpoint


def run_pipeline(args: argparse.Namespace) -> int:
    """Pretrain unless --checkpoint is given, then evaluate every head and export the results."""
    from fewshot.run.pipeline import evaluate_checkpoint
    checkpoint = existing_checkpoint(args.checkpoint) if args.checkpoint else None
    config, dataset, run = prepare_run(args, checkpoint)
    try:
        if checkpoint is None:
            from fewshot.commands.pretrain import run_pretraining
            from fewshot.run.pretrained import reuse_or_pretrain
            checkpoint = reuse_or_pretrain(config, dataset, run, lambda: run_pretraining(
                config, dataset, run.output_dir, run.device, resume=args.resume, quiet=args.quiet),
                retrain=getattr(args, "retrain", False))
        evaluate_checkpoint(config, dataset, checkpoint, run)
    finally:
        distributed.leave(run.ranks)
    if run.ranks.is_main:
        run.console.print(f"results, leaderboard.md, accuracy.png and report.html written to {run.output_dir}")
    return 0


command("evaluate", "evaluate the configured heads on a pretrained backbone's features",
        lambda parser: add_evaluate_options(parser, checkpoint_required=True))(run_pipeline)
