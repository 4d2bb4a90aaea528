"""DropBlock (Ghiasi et al., 2018): drop square regions of feature maps, not single units."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock(nn.Module):
    """Zero random block_size x block_size squares of each channel while training.

    The block side adapts to the feature map so the same model works at 32x32 and 84x84:
    it is `min(max_block_size, side // 2)`, at least 1 (84x84 input: 5 then 2 in the last
    two ResNet-12 stages; 32x32 input: 2 then 1).

    Args:
        drop_rate: expected fraction of units dropped (0 disables the module).
        max_block_size: the largest block side.
    """

    def __init__(self, drop_rate: float, max_block_size: int = 5):
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate}")
        self.drop_rate = drop_rate
        self.max_block_size = max_block_size

    def block_size(self, height: int, width: int) -> int:
        """The block side used on a height x width feature map."""
        return max(1, min(self.max_block_size, min(height, width) // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_rate == 0.0:
            return x
        batch, channels, height, width = x.shape
        size = self.block_size(height, width)
        valid_h, valid_w = height - size + 1, width - size + 1
        # Seed rate such that blocks (which overlap the valid region only) drop `drop_rate` of units.
        gamma = self.drop_rate / size ** 2 * (height * width) / (valid_h * valid_w)
        seeds = torch.bernoulli(torch.full((batch, channels, valid_h, valid_w), gamma,
                                           dtype=x.dtype, device=x.device))
        # A seed at (i, j) drops [i, i + size) x [j, j + size): pad, then a max-pool spreads it.
        padded = F.pad(seeds, (size - 1, size - 1, size - 1, size - 1))
        dropped = F.max_pool2d(padded, kernel_size=size, stride=1)
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, max_block_size={self.max_block_size}"
