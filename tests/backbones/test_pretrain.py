"""Pretraining: the loop, best-checkpoint selection, bit-exact resume after SIGKILL, 2-process DDP.

This file doubles as the script the tests run in subprocesses:
`python tests/backbones/test_pretrain.py train OUT` and, under torchrun, `... distributed OUT`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import load_checkpoint, read_checkpoint
from backbones.config import BackboneConfig, PretrainConfig
from backbones.pretrain import BEST, LAST, pretrain
from backbones.trainer import Trainer
from episodes.base import Split
from episodes.errors import UserError

TINY = BackboneConfig(width=0.0625)  # 4-10-20-40 channels
SETTINGS = PretrainConfig(epochs=3, batch_size=8, lr=0.1, checkpoint_every=4)


def colour_split(classes: int, per_class: int, seed: int, size: int = 32) -> Split:
    """Noisy images whose mean colour depends on the class: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    hue = torch.rand(classes, 3, generator=generator)[labels] * 255
    noise = 30 * torch.randn(len(labels), 3, size, size, generator=generator)
    images = (hue.view(-1, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    return Split(images, labels, tuple(f"class{i}" for i in range(classes)))


BASE, VAL = colour_split(6, 8, seed=1), colour_split(5, 6, seed=2)   # 6 steps per epoch at batch 8


def train(output_dir: Path, resume: bool = False, settings: PretrainConfig = SETTINGS, **kwargs) -> Path:
    return pretrain(TINY, settings, BASE, VAL, output_dir=output_dir, device="cpu", resume=resume,
                    seed=3, progress=False, **kwargs)


def test_pretrain_writes_best_and_last_checkpoints_and_learns(tmp_path):
    best = train(tmp_path)
    assert best == tmp_path / BEST and (tmp_path / LAST).exists()
    model, info = load_checkpoint(best)
    assert not model.training and info["backbone"] == "resnet12" and info["feature_dim"] == 40
    assert info["epoch"] == 3 and info["step"] == 18            # no validate: the last epoch is best
    losses = [record["loss"] for record in info["history"]]
    assert losses[-1] < losses[0]
    assert "optimizer" not in read_checkpoint(best) and "optimizer" in read_checkpoint(tmp_path / LAST)


def test_best_checkpoint_is_the_epoch_with_the_best_validation_accuracy(tmp_path):
    accuracies = iter([0.3, 0.7, 0.5])
    seen_modes = []

    def validate(model: torch.nn.Module) -> float:
        seen_modes.append(model.training)
        return next(accuracies)

    train(tmp_path, validate=validate)
    _, best = load_checkpoint(tmp_path / BEST)
    _, last = load_checkpoint(tmp_path / LAST)
    assert (best["epoch"], best["best_accuracy"]) == (2, 0.7)
    assert last["epoch"] == 3 and last["best_epoch"] == 2
    assert [record["val_accuracy"] for record in last["history"]] == [0.3, 0.7, 0.5]


def test_an_existing_run_is_not_overwritten_and_resume_checks_the_settings(tmp_path):
    one_epoch = PretrainConfig(epochs=2, batch_size=8, checkpoint_every=0)
    train(tmp_path, settings=one_epoch)
    with pytest.raises(UserError, match="--resume"):
        train(tmp_path, settings=one_epoch)
    with pytest.raises(UserError, match="pretrain.lr"):
        train(tmp_path, resume=True, settings=PretrainConfig(epochs=2, batch_size=8, lr=0.2))
    # A finished run resumes to nothing left to do and returns its best checkpoint.
    assert train(tmp_path, resume=True, settings=one_epoch) == tmp_path / BEST


def test_ranks_split_each_global_batch_without_overlap():
    settings = PretrainConfig(epochs=1, batch_size=8)
    single = Trainer(TINY, settings, BASE, device=torch.device("cpu"), seed=0)
    shards = []
    for rank in (0, 1):
        trainer = Trainer(TINY, settings, BASE, device=torch.device("cpu"), seed=0)
        trainer.ranks = type(trainer.ranks)(rank=rank, world_size=2)  # no process group needed
        trainer.local_batch = 4
        shards.append(trainer.batch(epoch=0, step=1)[1])
    assert torch.equal(torch.cat(shards), single.batch(epoch=0, step=1)[1])


def test_batches_are_a_pure_function_of_seed_epoch_and_step():
    trainer = Trainer(TINY, SETTINGS, BASE, device=torch.device("cpu"), seed=0)
    first = trainer.batch(epoch=1, step=2)
    trainer.batch(epoch=0, step=0)
    again = trainer.batch(epoch=1, step=2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], trainer.batch(epoch=1, step=3)[0])


def test_run_killed_mid_epoch_and_resumed_ends_with_bit_identical_weights(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    train(uninterrupted)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, __file__, "train", str(interrupted)])
    try:
        while not (interrupted / LAST).exists():
            assert process.poll() is None, "the training subprocess ended before its first checkpoint"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = read_checkpoint(interrupted / LAST)
    assert 0 < killed_at["step"] < 18, "the run was not interrupted in the middle"

    train(interrupted, resume=True)
    expected, resumed = read_checkpoint(uninterrupted / LAST), read_checkpoint(interrupted / LAST)
    for key, value in expected["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    momentum = [state["momentum_buffer"] for state in expected["optimizer"]["state"].values()]
    resumed_momentum = [state["momentum_buffer"] for state in resumed["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum, strict=True))
    assert resumed["history"] == expected["history"]


def test_two_process_gloo_run_keeps_ranks_identical_and_only_rank0_writes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", __file__, "distributed", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [BEST, LAST]
    assert not (tmp_path / "rank1").exists()
    weights = [torch.load(tmp_path / f"weights-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:   # parameters, and BatchNorm statistics (averaged at each epoch end)
        assert torch.equal(weights[0][key], weights[1][key]), key
    _, info = load_checkpoint(tmp_path / "rank0" / LAST)
    assert info["history"][-1]["loss"] < info["history"][0]["loss"]
    # Each rank trained on half of every batch: the epoch saw all the images once, summed over ranks.
    assert info["step"] == 3 * 6


def _distributed_worker(out: Path) -> None:
    import backbones.pretrain as pretrain_module
    rank = int(os.environ["RANK"])
    trainers: list[Trainer] = []

    def keep_trainer(*args, **kwargs) -> Trainer:  # to save this rank's weights afterwards
        trainers.append(Trainer(*args, **kwargs))
        return trainers[-1]

    pretrain_module.Trainer = keep_trainer
    settings = PretrainConfig(epochs=3, batch_size=8, lr=0.1, checkpoint_every=4)
    # Each rank is given its own folder so that the test can see which ranks wrote files.
    pretrain(TINY, settings, BASE, VAL, output_dir=out / f"rank{rank}", device="cpu", seed=3,
             progress=False)
    torch.save(trainers[0].network.state_dict(), out / f"weights-rank{rank}.pt")


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "train":
        train(folder)
    elif mode == "distributed":
        _distributed_worker(folder)
