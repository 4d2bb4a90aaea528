"""`fewshot datasets`: the known datasets, and whether each is found under the data root."""
from __future__ import annotations

import argparse

from rich.table import Table

from fewshot.commands.options import command, console_for


@command("datasets", "known datasets and whether each is found under the data root")
def run_datasets(args: argparse.Namespace) -> int:
    from episodes import available_datasets, get_dataset_source, resolve_data_root
    root = resolve_data_root(args.data_root)
    table = Table(title=f"Datasets under {root}")
    table.add_column("name")
    table.add_column("found", overflow="fold")
    table.add_column("expected layout", overflow="fold")
    for name in available_datasets():
        source = get_dataset_source(name)
        location = source.find(root, None)
        missing = "[yellow]built on first use[/]" if source.generated else "[red]no[/]"
        table.add_row(name, f"[green]yes[/] {location}" if location else missing, source.layout)
    console_for(args).print(table)
    return 0
