"""`fewshot heads`: the registered head optimizers, plug-ins included, with their default settings."""
from __future__ import annotations

import argparse
import dataclasses

from rich.table import Table

from fewshot.commands.options import command, console_for


@command("heads", "registered head optimizers, plug-ins included")
def run_heads(args: argparse.Namespace) -> int:
    from fewshot.heads import available_heads, head_class
    table = Table(title="Head optimizers")
    for column in ("name", "class", "settings (defaults)"):
        table.add_column(column)
    for name in available_heads():
        cls = head_class(name)
        defaults = cls.Config()
        settings = ", ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(defaults))
        table.add_row(name, f"{cls.__module__}.{cls.__qualname__}", settings)
    console_for(args).print(table)
    return 0
