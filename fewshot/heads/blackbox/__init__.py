"""The `blackbox` head and its library adapters (one module per library, each registered with
`register_adapter`): importing the package registers the head and every adapter.
"""
from fewshot.heads.blackbox import cma_adapter, evotorch_adapter, nevergrad_adapter, torch_adapter  # registers the adapters
from fewshot.heads.blackbox.adapter import Adapter, BlackboxConfig, available_libraries, register_adapter
from fewshot.heads.blackbox.head import BlackboxHead

__all__ = ["Adapter", "BlackboxConfig", "BlackboxHead", "available_libraries", "register_adapter", "cma_adapter",
           "evotorch_adapter", "nevergrad_adapter", "torch_adapter"]
