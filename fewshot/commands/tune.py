"""`fewshot tune --config FILE --checkpoint PATH`: choose head settings on val episodes, evaluate on novel."""
from __future__ import annotations

import argparse

from backbones import distributed
from fewshot.commands.options import command, load_run_config
from fewshot.commands.evaluate import add_evaluate_options, existing_checkpoint, prepare_run


@command("tune", "choose each head's settings on val episodes (the config's tune section), "
         "then evaluate them on the novel split", lambda parser: add_evaluate_options(parser, checkpoint_required=True))
def run_tune_command(args: argparse.Namespace) -> int:
    from fewshot.run.tune import run_tune
    from fewshot.run.tune_space import check_space
    checkpoint = existing_checkpoint(args.checkpoint)
    config = load_run_config(args)
    check_space(config.heads, config.tune)  # before prepare_run creates the output folder
    config, dataset, run = prepare_run(args, checkpoint)  # the validation pass checks the checkpoint too
    try:
        run_tune(config, dataset, checkpoint, run)
    finally:
        distributed.leave(run.ranks)
    if run.ranks.is_main:
        run.console.print(f"tuning record, results, leaderboard.md and accuracy.png written to {run.output_dir}")
    return 0
