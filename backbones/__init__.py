"""Backbones (ResNet-12), supervised pretraining and checkpoints."""
