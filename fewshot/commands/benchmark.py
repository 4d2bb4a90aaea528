"""`fewshot benchmark`: the whole pipeline, from images to a leaderboard."""
from fewshot.commands.options import command
from fewshot.commands.evaluate import add_evaluate_options, run_pipeline

command("benchmark", "pretrain (or load --checkpoint), then evaluate every head; the built-in demo "
        "with no --config", lambda parser: add_evaluate_options(parser, checkpoint_required=False))(run_pipeline)
