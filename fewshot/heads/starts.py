"""Starting points of the searching heads (`sgd`, `pattern_search`, `greedy_random`).

`zero`: W = 0, b = 0. `uniform`: every weight and bias i.i.d. U[-scale, scale] (the seed,
Chiang et al. 2023, starts every optimizer from U[-1, 1]). `gaussian`: i.i.d. N(0, scale^2).
Drawn from the generator passed in, on the generator's device, then moved.

Example:
    >>> params = draw_start("uniform", 1.0, (episodes, dim + 1, n_way), generator, device)
"""
from __future__ import annotations

from typing import Literal

import torch

StartKind = Literal["zero", "uniform", "gaussian"]
START_KINDS: tuple[str, ...] = ("zero", "uniform", "gaussian")


def draw_start(kind: str, scale: float, shape: tuple[int, ...], generator: torch.Generator,
               device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A start of `shape` (e.g. [E, D + 1, N]: weight rows then the bias row).

    Args:
        kind: one of `START_KINDS`.
        scale: half-width of `uniform`, standard deviation of `gaussian`.
        shape: the parameter tensor's shape.
        generator: the only source of randomness (nothing is drawn for `zero`).
        device, dtype: of the result.
    """
    if kind == "zero":
        return torch.zeros(shape, device=device, dtype=dtype)
    if kind == "uniform":
        values = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64) * 2 - 1
    elif kind == "gaussian":
        values = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float64)
    else:
        raise ValueError(f"unknown start {kind!r}; expected one of {START_KINDS}")
    return (values * scale).to(device=device, dtype=dtype)
