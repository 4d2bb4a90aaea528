"""One pretraining run's model, optimizer, schedule and data, and a single training step.

Every random choice of a step (which images, how they are augmented, DropBlock masks) is a
pure function of (seed, epoch, step, rank), so a run resumed from a mid-epoch checkpoint takes
exactly the steps an uninterrupted run takes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from backbones.augment import augment, to_float
from backbones.config import BackboneConfig, PretrainConfig
from backbones.distributed import Ranks
from backbones.registry import get_backbone
from episodes.base import Split
from episodes.errors import fail


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that depends on every part (e.g. seed, "augment", epoch, step, rank)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def backbone_kwargs(config: BackboneConfig) -> dict[str, Any]:
    """The settings `get_backbone(config.name, **settings)` takes (everything but the name)."""
    return {key: value for key, value in dataclasses.asdict(config).items() if key != "name"}


class Trainer:
    """Backbone + linear classifier trained with cross-entropy by SGD on the base classes.

    Args:
        backbone: which backbone to build.
        settings: optimizer, schedule and data settings.
        base: the training split (moved to `device` once, as uint8).
        device: where this rank trains.
        seed: seed of the weights, the data order and the augmentation.
        ranks: this process's rank; the global batch is split evenly across ranks.
    """

    def __init__(self, backbone: BackboneConfig, settings: PretrainConfig, base: Split, *,
                 device: torch.device, seed: int, ranks: Ranks = Ranks()):
        check_settings(settings, len(base), ranks.world_size)
        self.settings, self.seed, self.ranks, self.device = settings, seed, ranks, device
        self.on_cuda = device.type == "cuda"
        self.steps_per_epoch = len(base) // settings.batch_size
        self.total_steps = settings.epochs * self.steps_per_epoch
        self.local_batch = settings.batch_size // ranks.world_size
        torch.manual_seed(derive_seed(seed, "init"))
        self.backbone = get_backbone(backbone.name, **backbone_kwargs(backbone))
        self.classifier = nn.Linear(self.backbone.feature_dim, base.num_classes)
        self.network = nn.Sequential(self.backbone, self.classifier).to(
            device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=settings.lr,
                                         momentum=settings.momentum, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.images = base.images.to(device)
        self.labels = base.labels.to(device)
        forward: nn.Module = self.network
        if ranks.distributed:
            forward = DistributedDataParallel(self.network, device_ids=[device.index] if self.on_cuda else None)
        if settings.compile and self.on_cuda:  # inductor on CPU costs minutes of compile for little
            forward = torch.compile(forward)
        self.forward = forward
        self._order: tuple[int, torch.Tensor] | None = None

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at global `step`: warm-up, then cosine or step decay."""
        warmup = self.settings.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if self.settings.schedule == "step":
            epoch = step // self.steps_per_epoch
            milestones = (round(0.6 * self.settings.epochs), round(0.8 * self.settings.epochs))
            return 0.1 ** sum(epoch >= milestone for milestone in milestones)
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of the base images (the same on every rank)."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
            self._order = (epoch, torch.randperm(len(self.labels), generator=generator))
        return self._order[1]

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the step's batch, augmented: (float images, labels) on the device.

        Also seeds torch's global generator for the step, which drives the model's own
        randomness (DropBlock).
        """
        start = step * self.settings.batch_size + self.ranks.rank * self.local_batch
        indices = self.order(epoch)[start:start + self.local_batch].to(self.device, non_blocking=self.on_cuda)
        images, labels = self.images[indices], self.labels[indices]
        torch.manual_seed(derive_seed(self.seed, "model", epoch, step, self.ranks.rank))
        if not self.settings.augment:
            return to_float(images), labels
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "augment", epoch, step, self.ranks.rank))
        return augment(images, generator, padding=self.settings.crop_padding, flip=self.settings.flip,
                       jitter=self.settings.jitter), labels

    def fit_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on a batch; returns (summed loss, correct predictions) as device tensors."""
        self.network.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_cuda and self.settings.bf16):
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach() * len(labels), (logits.detach().argmax(1) == labels).sum()

    def training_state(self) -> dict[str, Any]:
        """Classifier, optimizer and scheduler state for a checkpoint (the backbone is saved apart)."""
        return {"classifier": {k: v.detach().cpu() for k, v in self.classifier.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_training_state(self, payload: dict[str, Any]) -> None:
        """Restore the classifier, optimizer and scheduler from a checkpoint's entries."""
        self.classifier.load_state_dict(payload["classifier"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])


def check_settings(settings: PretrainConfig, images: int, world_size: int) -> None:
    """Raise a `UserError` for settings that cannot train on `images` base images."""
    if settings.epochs < 1:
        raise fail(f"pretrain.epochs is {settings.epochs}.", "Set pretrain.epochs to at least 1.")
    if settings.lr <= 0 or settings.momentum < 0 or settings.weight_decay < 0:
        raise fail("pretrain.lr must be positive and pretrain.momentum and pretrain.weight_decay "
                   "non-negative.", "Fix those values in the config.")
    if settings.warmup_epochs < 0 or settings.warmup_epochs >= settings.epochs:
        raise fail(f"pretrain.warmup_epochs is {settings.warmup_epochs} with {settings.epochs} epochs.",
                   "Set pretrain.warmup_epochs to at least 0 and below pretrain.epochs.")
    if settings.batch_size < world_size or settings.batch_size % world_size:
        raise fail(f"pretrain.batch_size {settings.batch_size} cannot be split evenly over "
                   f"{world_size} processes.", f"Set it to a multiple of {world_size}.")
    if (settings.crop_padding or 0) < 0 or not 0.0 <= settings.jitter < 1.0:
        raise fail(f"pretrain.crop_padding is {settings.crop_padding} and pretrain.jitter {settings.jitter}.",
                   "Set crop_padding to 0 or more (or null) and jitter in [0, 1).")
    if settings.batch_size > images:
        raise fail(f"pretrain.batch_size {settings.batch_size} is larger than the {images} base images.",
                   f"Set pretrain.batch_size to at most {images}.")
