"""Backbones (ResNet-12), supervised pretraining and checkpoints.

Example:
    >>> from backbones import get_backbone, load_checkpoint, extract_features
    >>> model = get_backbone("resnet12", width=0.5)
    >>> model, info = load_checkpoint("runs/demo/checkpoint-best.pt")
    >>> features = extract_features(model, split.images, device="cpu")

`backbones.pretrain.pretrain` and `backbones.augment.augment` are not re-exported here, so that
the names `backbones.pretrain` and `backbones.augment` stay the modules.
"""
from backbones.augment import to_float
from backbones.checkpoint import checkpoint_sha256, load_checkpoint
from backbones.config import BackboneConfig, PretrainConfig
from backbones.features import extract_features
from backbones.registry import available_backbones, get_backbone, register_backbone
import backbones.resnet12  # noqa: F401,E402  (registers resnet12 once the registry exists)

__all__ = ["BackboneConfig", "PretrainConfig", "available_backbones", "checkpoint_sha256",
           "extract_features", "get_backbone", "load_checkpoint", "register_backbone",
           "to_float"]
