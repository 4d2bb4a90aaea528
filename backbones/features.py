"""Features of many images through a frozen backbone, in large inference batches."""
from __future__ import annotations

import torch
from torch import nn

from backbones.augment import to_float


# Measured on the 2-core CPU (bench/evaluate.py): ResNet-12 at 32x32 runs 15-40% more images/s
# in batches of 16-32 than of 256, whose activations overflow the caches; GPUs want big batches.
CPU_BATCH, CUDA_BATCH = 32, 512


def extract_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 0,
                     device: str | torch.device = "cpu", bf16: bool = True) -> torch.Tensor:
    """Backbone features of uint8 images, float32 [N, D] on the CPU.

    Runs in inference mode with the model in eval() (its previous mode is restored), with
    channels_last inputs, and under bf16 autocast on CUDA only (on CPUs without bf16 units
    autocast is ~10x slower).

    Args:
        model: a backbone mapping normalized images [B, 3, H, W] to features [B, D].
        images: uint8 [N, 3, H, W] on any device.
        batch_size: images per forward pass (0: 32 on CPU, 512 on CUDA).
        device: where the forward passes run; the model is moved there.
        bf16: bf16 autocast when on CUDA (ignored on the CPU).
    """
    device = torch.device(device)
    batch_size = batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
    was_training = model.training
    model.to(device, memory_format=torch.channels_last).eval()
    on_cuda = device.type == "cuda"
    chunks = []
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda and bf16):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(device, non_blocking=on_cuda)
                chunks.append(model(to_float(batch)).float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros((0, getattr(model, "feature_dim", 0)), dtype=torch.float32)
    return torch.cat(chunks)
