"""Head optimizers: fit a linear head per episode on frozen features.

Importing this package registers the built-in heads (one module per head in this package, each
with a `@register_head` class); plug-ins register through the entry-point group `fewshot.heads`
when the registry is first read.
"""
import importlib
import pkgutil

from fewshot.heads.base import (HeadFit, HeadOptimizer, Queries, available_heads, get_head, head_class,
                                register_head)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["HeadFit", "HeadOptimizer", "Queries", "available_heads", "get_head", "head_class",
           "register_head"]
