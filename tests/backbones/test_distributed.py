"""`join` / `leave` and the collective helpers on a two-process gloo group, as `torchrun` starts it."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from backbones import distributed


def _rank(rank: int, port: int, results: "mp.Queue") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    ranks, _ = distributed.join("cpu")
    model = DistributedDataParallel(nn.BatchNorm1d(1))
    model(torch.tensor([[1.0], [3.0]]) * (rank + 1))     # running mean: 0.2 (rank 0), 0.4 (rank 1)
    distributed.average_buffers(model.module, ranks)
    report = (ranks.rank, ranks.world_size, ranks.owns_group,
              distributed.sum_across_ranks(torch.tensor([rank + 1.0]), ranks).item(),
              round(model.module.running_mean.item(), 6),
              distributed.gather_objects({"rank": rank}, ranks))
    distributed.barrier(ranks)
    distributed.leave(ranks)
    results.put((*report, dist.is_initialized()))


def test_two_ranks_join_reduce_average_gather_and_leave():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_rank, args=(rank, port, results)) for rank in range(2)]
    for process in processes:
        process.start()
    reports = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    gathered = [{"rank": 0}, {"rank": 1}]
    assert reports == [(0, 2, True, 3.0, 0.3, gathered, False), (1, 2, True, 3.0, 0.3, gathered, False)]


def test_a_single_process_is_a_world_of_one():
    ranks, device = distributed.join("cpu")
    assert (ranks.rank, ranks.world_size, ranks.distributed, ranks.owns_group) == (0, 1, False, False)
    assert distributed.gather_objects("x", ranks) == ["x"]
    assert distributed.sum_across_ranks(torch.tensor([2.0]), ranks).item() == 2.0
    distributed.leave(ranks)
    assert device == torch.device("cpu") and not dist.is_initialized()
