"""Process-group helpers for pretraining under `torchrun` (a single process is a world of one)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

WORKER_GRACE_SECONDS = 0.1


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks.

    Args:
        rank: global rank (0 writes files and prints).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        owns_group: this module created the process group, so it also destroys it.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def join(device: str | torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group `torchrun` describes in the environment, if any.

    Uses nccl for CUDA devices (each rank on GPU `LOCAL_RANK`) and gloo otherwise. A group that
    the caller already initialized is reused and left to the caller.

    Args:
        device: the requested device, e.g. `cpu` or `cuda`.

    Returns:
        (ranks, the device this rank trains on).
    """
    device = torch.device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return Ranks(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owns_group), device


def leave(ranks: Ranks) -> None:
    """Destroy the process group if `join` created it.

    A gloo worker thread drops its reference to a finished collective's tensors just after
    `wait()` returns, and needs the GIL to do so. If the interpreter is already shutting down
    by then, the thread dies holding a C++ destructor and the process aborts ("terminate
    called without an active exception"), about one run in twenty here. The group would join
    its workers when destroyed, but torch keeps it alive once a DistributedDataParallel has
    been built, so instead the GIL is given up for a moment to let the workers finish.
    """
    if ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(WORKER_GRACE_SECONDS)


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op for one process)."""
    if ranks.distributed:
        dist.barrier()


def sum_across_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Element-wise sum of a small tensor over all ranks (returns a new tensor)."""
    values = values.clone()
    if ranks.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def average_buffers(module: torch.nn.Module, ranks: Ranks) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks, in place.

    DDP keeps rank 0's buffers during training; averaging them before a checkpoint gives
    statistics of every rank's data and leaves the ranks identical.
    """
    if not ranks.distributed:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(ranks.world_size)


def gather_objects(value: Any, ranks: Ranks) -> list[Any]:
    """`value` from every rank, in rank order (a list of one for a single process)."""
    if not ranks.distributed:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, value)
    return gathered
