"""Config sections owned by `backbones`: the network and how it is pretrained."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class BackboneConfig:
    """The `backbone` section: the architecture and its size.

    Args:
        name: registered backbone (`resnet12`).
        width: multiplier on the channel widths 64-160-320-640.
        dropblock: DropBlock drop rate in the last two stages (0 disables it).
    """

    name: str = "resnet12"
    width: float = 1.0
    dropblock: float = 0.0


@dataclass
class PretrainConfig:
    """The `pretrain` section: supervised pretraining on the base classes.

    Args:
        epochs: passes over the base classes.
        batch_size: images per step (global, split across ranks).
        lr: peak learning rate of SGD.
        momentum: SGD momentum (Nesterov off).
        weight_decay: L2 weight decay.
        schedule: `cosine` or `step` (x0.1 at 60% and 80% of training).
        warmup_epochs: linear warm-up length.
        checkpoint_every: steps between mid-epoch checkpoints (0: only at epoch ends).
        val_episodes: 5-way 5-shot prototype episodes on val classes after each epoch.
        augment: random crop with padding, flip and colour jitter (false: none of them).
        crop_padding: zero padding before the random crop (None: image size // 8; 0: no crop).
        flip: random horizontal flips (turn off for data where mirror images are other classes,
            such as characters).
        jitter: brightness/contrast/saturation factors drawn from [1 - jitter, 1 + jitter].
        compile: `torch.compile` the model (CUDA only).
        bf16: bf16 autocast (CUDA only).
        deterministic: deterministic CUDA kernels, for bit-exact resume (on CPU the kernels and,
            everywhere, the data order and augmentation are deterministic anyway).
        seed: seed of the initial weights, the data order and the augmentation.
    """

    epochs: int = 90
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_epochs: int = 0
    checkpoint_every: int = 200
    val_episodes: int = 200
    augment: bool = True
    crop_padding: int | None = None
    flip: bool = True
    jitter: float = 0.4
    compile: bool = False
    bf16: bool = True
    deterministic: bool = True
    seed: int = 0
