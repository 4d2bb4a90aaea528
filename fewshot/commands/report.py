"""`fewshot report RUN_DIR... [--output FILE]`: the HTML report of one or more runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from episodes.errors import fail
from fewshot.commands.options import command, console_for
from fewshot.results.document import find_results_files, read_results
from fewshot.run.runlock import claim_output_folder
from fewshot.sweep.folder import finished_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fewshot report`."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folders (searched recursively for results-*.json), or results files")
    parser.add_argument("--output", default=None,
                        help="the HTML file to write (default: report.html in the single RUN_DIR given; "
                             "required for several)")
    parser.add_argument("--title", default="fewshot report", help="the page title")


def _output(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    if len(args.runs) == 1 and Path(args.runs[0]).is_dir():
        return Path(args.runs[0]) / "report.html"
    given = (f"{len(args.runs)} inputs were given" if len(args.runs) > 1
             else f"{args.runs[0]!r} is a file, not a run folder")
    raise fail(f"{given}, so there is no single run folder to write report.html into.",
               "Pass --output FILE.html (or the run folder itself).")


@command("report", "write a self-contained HTML report (leaderboard, plots, comparisons, diagnostics)", add_arguments)
def run_report(args: argparse.Namespace) -> int:
    """Read every results file first, so a bad one stops the command before anything is written."""
    from fewshot.report import write_report
    output = _output(args)
    paths = find_results_files(finished_results(args.runs))
    docs = [read_results(path) for path in paths]
    claim_output_folder(output, command="report")  # never into a folder a live run is writing
    try:
        write_report(docs, output, sources=[str(path) for path in paths], title=args.title)
    except OSError as error:
        raise fail(f"The report cannot be written to {str(output)!r} ({error.strerror}).",
                   "Pass --output with a file in a folder you can write to.") from None
    console_for(args).print(f"Wrote the report of {len(docs)} results files to {output}", highlight=False)
    return 0
