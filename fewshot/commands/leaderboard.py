"""`fewshot leaderboard RESULTS.json... [--format md|csv|json] [--output FILE]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from episodes.io import atomic_write_text
from fewshot.commands.options import command, console_for
from fewshot.commands.errorpath import check_output_file
from fewshot.report.leaderboard import MISMATCH_FLAG, RENDERERS, merge, to_markdown
from fewshot.results.document import find_results_files, read_results
from fewshot.run.runlock import claim_output_folder
from fewshot.sweep.folder import finished_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fewshot leaderboard`."""
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="results-*.json files, or folders searched (recursively) for them; a sweep "
                        "folder gives its finished cells")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="md",
                        help="md: one ranked table per dataset and shot setting (default); csv; json")
    parser.add_argument("--output", default=None, help="write to this file (atomically) instead of stdout")
    parser.add_argument(MISMATCH_FLAG, dest="allow_mismatch", action="store_true",
                        help="list runs evaluated on different episodes side by side, marked, instead of refusing")


@command("leaderboard", "merge results files of several runs into one ranked table", add_arguments)
def run_leaderboard(args: argparse.Namespace) -> int:
    """Read every results file first, so a bad one stops the command before anything is written."""
    if args.output is not None:
        check_output_file(args.output)  # before reading: a bad --output stops the command at once
    paths = find_results_files(finished_results(args.results))
    docs = [read_results(path) for path in paths]
    rows = merge(docs, sources=[str(path) for path in paths], allow_mismatch=args.allow_mismatch)
    text = to_markdown(rows, docs) if args.format == "md" else RENDERERS[args.format](rows)
    if args.output is None:
        print(text, end="")
    else:
        claim_output_folder(Path(args.output), command="leaderboard")  # never into a folder a live run holds
        atomic_write_text(args.output, text)
        console_for(args).print(f"Wrote {len(rows)} rows from {len(docs)} results files to {args.output}",
                                highlight=False)
    return 0
