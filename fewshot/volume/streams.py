"""One random stream per problem (episode and repeat), so results do not depend on batching.

Every draw for a problem comes from its own `torch.Generator`, seeded from the problem's
identity, and a problem consumes its stream in the same order whichever other problems share
its batch. Splitting episodes into other chunks, sub-batches or processes therefore gives
bit-identical numbers.

Example:
    >>> streams = Streams([11, 12, 13])
    >>> streams.randn((4, 2), index=torch.tensor([0, 2]))   # [2, 4, 2]: problems 0 and 2 only
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

__all__ = ["Streams", "stream_seed"]


def stream_seed(*parts: object) -> int:
    """A seed from any identifying parts (e.g. run seed, setting, episode, repeat), stable everywhere."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


class Streams:
    """Per-problem generators (float64 draws).

    Args:
        seeds: one seed per problem.
    """

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, kind: str, shape: tuple[int, ...], index: torch.Tensor | None) -> torch.Tensor:
        chosen = range(len(self.generators)) if index is None else index.tolist()
        draw = torch.randn if kind == "randn" else torch.rand
        if not chosen:
            return torch.empty((0, *shape), dtype=torch.float64)
        return torch.stack([draw(shape, generator=self.generators[i], dtype=torch.float64) for i in chosen])

    def randn(self, shape: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal draws [len(index), *shape] from the streams in `index` (all if None)."""
        return self._draw("randn", shape, index)

    def rand(self, shape: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform [0, 1) draws [len(index), *shape] from the streams in `index` (all if None)."""
        return self._draw("rand", shape, index)
