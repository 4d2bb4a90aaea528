"""Supervised pretraining of a backbone on the base classes, resumable and distributed.

Example:
    >>> best = pretrain(BackboneConfig(width=0.5), PretrainConfig(epochs=6), data.base, data.val,
    ...                 output_dir=Path("runs/demo"), device="cpu", validate=my_validation)
"""
from __future__ import annotations

import dataclasses
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.console import Console
from torch import nn

from backbones import distributed
from backbones.checkpoint import load_weights, read_checkpoint, save_checkpoint
from backbones.config import BackboneConfig, PretrainConfig
from backbones.distributed import Ranks
from backbones.progress import TrainingProgress
from backbones.trainer import Trainer, backbone_kwargs
from episodes.base import Split
from episodes.errors import fail
from episodes.io import fingerprint

LAST = "checkpoint-last.pt"
BEST = "checkpoint-best.pt"
# Settings that do not change the trajectory of the weights, so a resumed run may change them.
RESUMABLE_CHANGES = ("checkpoint_every", "val_episodes", "compile")
Validate = Callable[[nn.Module], float]
# An epoch's mean cross-entropy above this means training diverged: chance level is ln(classes),
# under 7 for 1000 classes, and no converging run averages logits off by 100 over an epoch.
DIVERGED_LOSS = 100.0


@dataclass
class RunState:
    """Where a run is: counters, the current epoch's running sums, and the best epoch so far."""

    epoch: int = 0              # completed epochs
    epoch_step: int = 0         # steps done in the current epoch
    step: int = 0               # steps done in all
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, correct, images
    best_accuracy: float | None = None
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def pretrain(backbone: BackboneConfig, settings: PretrainConfig, base: Split, val: Split, *,
             output_dir: Path, device: str, resume: bool = False, seed: int = 0,
             run_config: dict[str, Any] | None = None, validate: Validate | None = None,
             progress: bool = True) -> Path:
    """Train `backbone` with cross-entropy on `base`; return the path of the best checkpoint.

    Under `torchrun` every rank calls this; the data is sharded per rank and only rank 0 writes.
    Checkpoints (`checkpoint-last.pt`) are written every `settings.checkpoint_every` steps and
    at each epoch end; `checkpoint-best.pt` holds the epoch with the best `validate` accuracy
    (the last epoch when `validate` is None).

    Args:
        backbone: the network to build.
        settings: optimizer, schedule, checkpoint and device settings.
        base: the training classes.
        val: the validation classes (part of the dataset fingerprint; `validate` evaluates them).
        output_dir: where checkpoints are written.
        device: `cpu`, `cuda` (each rank then uses GPU `LOCAL_RANK`), ...
        resume: continue from `output_dir/checkpoint-last.pt` if it exists.
        seed: seed of the weights, data order and augmentation.
        run_config: the whole run config as plain data, stored in the checkpoints.
        validate: accuracy in [0, 1] of a backbone on few-shot validation episodes (rank 0 only).
        progress: show a progress bar and a line per epoch (rank 0 only).
    """
    output_dir = Path(output_dir)
    ranks, torch_device = distributed.join(device)
    cuda_devices = [torch_device.index or 0] if torch_device.type == "cuda" else []
    try:
        # The caller's random state is left as it was: the run seeds its own generators.
        with torch.random.fork_rng(devices=cuda_devices), deterministic_mode(settings.deterministic, torch_device):
            run = _Run(backbone, settings, base, val, output_dir=output_dir, device=torch_device,
                       ranks=ranks, seed=seed, run_config=run_config or {}, validate=validate,
                       progress=progress)
            return run.train(resume)
    finally:
        distributed.leave(ranks)


class _Run:
    """The state of one `pretrain` call (split from it to keep the loop readable)."""

    def __init__(self, backbone: BackboneConfig, settings: PretrainConfig, base: Split, val: Split, *,
                 output_dir: Path, device: torch.device, ranks: Ranks, seed: int,
                 run_config: dict[str, Any], validate: Validate | None, progress: bool):
        self.backbone_config, self.settings, self.seed = backbone, settings, seed
        self.output_dir, self.ranks, self.validate = output_dir, ranks, validate
        self.run_config = run_config
        self.dataset_fingerprint = fingerprint([], [base.fingerprint, val.fingerprint])
        self.trainer = Trainer(backbone, settings, base, device=device, seed=seed, ranks=ranks)
        self.console = Console(quiet=not (progress and ranks.is_main))
        self.state = RunState()

    def train(self, resume: bool) -> Path:
        self.restore(resume)
        trainer, state = self.trainer, self.state
        sums = torch.tensor(state.sums if self.ranks.is_main else [0.0] * 3, dtype=torch.float64,
                            device=trainer.device)
        with TrainingProgress(self.console, trainer.total_steps, state.step,
                              images_per_step=self.settings.batch_size) as bar:
            while state.epoch < self.settings.epochs:
                for step in range(state.epoch_step, trainer.steps_per_epoch):
                    loss, correct = trainer.fit_batch(*trainer.batch(state.epoch, step))
                    sums[0] += loss.double()
                    sums[1] += correct.double()
                    sums[2] += trainer.local_batch
                    state.epoch_step, state.step = step + 1, state.step + 1
                    every = self.settings.checkpoint_every
                    if every and state.step % every == 0 and step + 1 < trainer.steps_per_epoch:
                        state.sums = distributed.sum_across_ranks(sums, self.ranks).tolist()
                        self.save(LAST, training_state=True)
                    if not trainer.on_cuda or step % 10 == 0 or step + 1 == trainer.steps_per_epoch:
                        bar.update(state.step, state.epoch, sums)  # .item() syncs, so not every GPU step
                self.end_epoch(distributed.sum_across_ranks(sums, self.ranks).tolist(), bar)
                sums.zero_()
        distributed.barrier(self.ranks)
        return self.output_dir / BEST

    def end_epoch(self, sums: list[float], bar: TrainingProgress) -> None:
        """Validate, record the epoch, and write the best and last checkpoints."""
        state = self.state
        finite_weights = all(bool(torch.isfinite(p).all()) for p in self.trainer.backbone.parameters())
        loss = sums[0] / max(sums[2], 1.0)
        if not (math.isfinite(loss) and loss < DIVERGED_LOSS and finite_weights):  # before any checkpoint
            raise fail(f"Pretraining diverged in epoch {state.epoch + 1}: the mean training loss is {loss:.4g}"
                       f"{'' if finite_weights else ' and the weights hold NaN or infinity'} "
                       f"(pretrain.lr = {self.settings.lr}, batch size {self.settings.batch_size}). The learning "
                       "rate is too high for this network and data.",
                       "Lower pretrain.lr (the bundled configs use 0.05) and start again in a new --output-dir.")
        distributed.average_buffers(self.trainer.network, self.ranks)
        accuracy = None
        if self.validate is not None and self.ranks.is_main:
            accuracy = float(self.validate(self.trainer.backbone))
        distributed.barrier(self.ranks)
        state.epoch, state.epoch_step, state.sums = state.epoch + 1, 0, [0.0, 0.0, 0.0]
        loss, correct, images = sums
        record = {"epoch": state.epoch, "loss": loss / images, "accuracy": correct / images,
                  "val_accuracy": accuracy, "lr": self.trainer.optimizer.param_groups[0]["lr"]}
        state.history.append(record)
        improved = self.validate is None or (accuracy is not None and
                                             (state.best_accuracy is None or accuracy > state.best_accuracy))
        if improved:
            state.best_accuracy, state.best_epoch = accuracy, state.epoch
        bar.epoch_done(record, self.settings.epochs, best=improved and accuracy is not None)
        if improved:  # best first: a kill between the two writes redoes this epoch end on resume
            self.save(BEST, training_state=False)
        self.save(LAST, training_state=True)

    def save(self, name: str, *, training_state: bool) -> None:
        """Write a checkpoint (rank 0 only)."""
        if not self.ranks.is_main:
            return
        state = dataclasses.asdict(self.state)
        extra = self.trainer.training_state() if training_state else {}
        save_checkpoint(self.output_dir / name, self.trainer.backbone, backbone=self.backbone_config.name,
                        backbone_config=backbone_kwargs(self.backbone_config),
                        dataset_fingerprint=self.dataset_fingerprint, config=self.run_config,
                        pretrain=dataclasses.asdict(self.settings), seed=self.seed,
                        num_classes=self.trainer.classifier.out_features, **state, **extra)

    def restore(self, resume: bool) -> None:
        """Continue from `checkpoint-last.pt` when resuming; refuse to overwrite a run otherwise."""
        path = self.output_dir / LAST
        if not path.exists():
            if resume:
                self.console.print(f"no checkpoint to resume in {self.output_dir}; starting from scratch")
            return
        if not resume:
            raise fail(f"The output directory {str(self.output_dir)!r} already holds a pretraining run.",
                       "Pass --resume to continue it, or choose a new --output-dir.")
        payload = read_checkpoint(path)
        self.check_resumable(payload, path)
        load_weights(self.trainer.backbone, payload["model"], path)
        self.trainer.load_training_state(payload)
        self.state = RunState(**{f.name: payload[f.name] for f in dataclasses.fields(RunState)})
        self.console.print(f"resuming from {path} (epoch {self.state.epoch}, step {self.state.step})")

    def check_resumable(self, payload: dict[str, Any], path: Path) -> None:
        """A `UserError` unless the checkpoint comes from a run with the same trajectory settings."""
        if "optimizer" not in payload or any(f.name not in payload for f in dataclasses.fields(RunState)):
            raise fail(f"The checkpoint {str(path)!r} holds no training state to resume from.",
                       "Choose a new --output-dir to train from scratch.")
        theirs = {"backbone": payload.get("backbone"), "backbone_config": payload.get("backbone_config"),
                  "seed": payload.get("seed"), "dataset": payload.get("dataset_fingerprint"),
                  **{f"pretrain.{k}": v for k, v in (payload.get("pretrain") or {}).items()}}
        ours = {"backbone": self.backbone_config.name, "backbone_config": backbone_kwargs(self.backbone_config),
                "seed": self.seed, "dataset": self.dataset_fingerprint,
                **{f"pretrain.{k}": v for k, v in dataclasses.asdict(self.settings).items()}}
        differ = [key for key in ours if key.split(".")[-1] not in RESUMABLE_CHANGES
                  and ours[key] != theirs.get(key)]
        if differ:
            key = differ[0]
            raise fail(f"Cannot resume from {str(path)!r}: it was trained with {key} = {theirs.get(key)!r}, "
                       f"but this run has {ours[key]!r}.",
                       "Resume with the same config and data, or choose a new --output-dir.")


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic CUDA kernels while training (restored afterwards); cuDNN autotuning otherwise.

    On CPU nothing is switched: the kernels pretraining uses are deterministic for a fixed thread
    count already (the resume test checks it bit for bit), and `torch.use_deterministic_algorithms`
    would import torch._inductor, ~3 s per process.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic, cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = enabled, not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]
