"""This process's place among `torchrun` ranks (a single process is a world of one)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Rank and size of the process group; collective helpers that are no-ops for one process."""

    rank: int = 0
    size: int = 1

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """`value` from every rank, in rank order."""
        if self.size == 1:
            return [value]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered


def join_world(device: str) -> World:
    """Join the process group `torchrun` set up in the environment (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size())
