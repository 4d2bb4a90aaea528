"""`fewshot benchmark`: the whole pipeline, from images to a leaderboard."""
from __future__ import annotations

import argparse

from backbones import distributed
from fewshot.cli import command
from fewshot.commands.evaluate import add_evaluate_options, existing_checkpoint, prepare_run


@command("benchmark", "pretrain (or load --checkpoint), then evaluate every head; the built-in demo "
         "with no --config", lambda parser: add_evaluate_options(parser, checkpoint_required=False))
def run_benchmark(args: argparse.Namespace) -> int:
    from fewshot.commands.pretrain import run_pretraining
    from fewshot.pipeline import evaluate_checkpoint
    checkpoint = existing_checkpoint(args.checkpoint) if args.checkpoint else None
    config, dataset, run = prepare_run(args)
    try:
        if checkpoint is None:
            checkpoint = run_pretraining(config, dataset, run.output_dir, run.device, resume=args.resume,
                                         quiet=args.quiet)
        evaluate_checkpoint(config, dataset, checkpoint, run)
    finally:
        distributed.leave(run.ranks)
    if run.ranks.is_main:
        run.console.print(f"results, leaderboard.md and accuracy.png written to {run.output_dir}")
    return 0
