"""Importing this module registers the built-in heads (one module per head in this package)."""
import importlib
import pkgutil

import fewshot.heads

for _module in pkgutil.iter_modules(fewshot.heads.__path__):
    if _module.name not in ("base", "builtin"):
        importlib.import_module(f"fewshot.heads.{_module.name}")
