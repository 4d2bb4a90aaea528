"""`fewshot evaluate --checkpoint PATH`: the second half of the benchmark (features -> results)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from episodes import FewShotDataset, load_dataset
from episodes.errors import fail
from fewshot.cli import (add_run_options, command, console_for, load_run_config, resolve_device,
                         resolve_output_dir)
from fewshot.config import Config
from backbones import distributed

if TYPE_CHECKING:  # the pipeline imports torch-heavy modules: load them only when a command runs
    from fewshot.pipeline import RunContext


def add_evaluate_options(parser: argparse.ArgumentParser, checkpoint_required: bool) -> None:
    add_run_options(parser)
    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help="backbone checkpoint (from `fewshot pretrain`)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --output-dir, keeping finished work")


def prepare_run(args: argparse.Namespace) -> tuple[Config, FewShotDataset, "RunContext"]:
    """Config, dataset, output directory, device and ranks of a pipeline command.

    Everything that can be wrong with the input is checked here, before any output is written.
    """
    from fewshot.pipeline import RunContext, episode_samplers
    config = load_run_config(args)
    dataset = load_dataset(config.dataset.name, args.data_root, config.dataset.path, config.dataset.image_size)
    episode_samplers(config, dataset)
    ranks, device = distributed.join(resolve_device(args))
    # Every rank must write into rank 0's directory, whose default name holds a timestamp.
    chosen = str(resolve_output_dir(args, config.name)) if ranks.is_main else None
    output_dir = Path(distributed.gather_objects(chosen, ranks)[0])
    return config, dataset, RunContext(output_dir=output_dir, device=str(device), data_root=args.data_root,
                                       console=console_for(args), ranks=ranks, resume=args.resume)


def existing_checkpoint(path: str) -> Path:
    checkpoint = Path(path)
    if not checkpoint.is_file():
        raise fail(f"The checkpoint {path!r} does not exist.",
                   "Pass --checkpoint with a file written by `fewshot pretrain` (checkpoint-best.pt in its "
                   "run directory).")
    return checkpoint


@command("evaluate", "evaluate the configured heads on a pretrained backbone's features",
         lambda parser: add_evaluate_options(parser, checkpoint_required=True))
def run_evaluate(args: argparse.Namespace) -> int:
    from fewshot.pipeline import evaluate_checkpoint
    checkpoint = existing_checkpoint(args.checkpoint)
    config, dataset, run = prepare_run(args)
    try:
        evaluate_checkpoint(config, dataset, checkpoint, run)
    finally:
        distributed.leave(run.ranks)
    if run.ranks.is_main:
        run.console.print(f"results written to {run.output_dir}")
    return 0
