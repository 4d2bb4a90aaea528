"""Head optimizers: fit a linear head per episode on frozen features."""
from fewshot.heads.base import (HeadFit, HeadOptimizer, Queries, available_heads, get_head, head_class,
                                register_head)

__all__ = ["HeadFit", "HeadOptimizer", "Queries", "available_heads", "get_head", "head_class",
           "register_head"]
