"""ResNet-12, the standard few-shot backbone (MetaOptNet / RFS): 12.4M parameters, 640-d features."""
from __future__ import annotations

import torch
from torch import nn

from backbones.dropblock import DropBlock
from backbones.registry import register_backbone

STANDARD_WIDTHS = (64, 160, 320, 640)


class ResidualBlock(nn.Module):
    """Three 3x3 conv + BatchNorm + LeakyReLU(0.1), a 1x1 projection shortcut, 2x2 max-pool.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        drop_rate: DropBlock rate after the pooling (0: none).
    """

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                      nn.BatchNorm2d(out_channels))
        self.activation = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.dropblock = DropBlock(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.activation(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.activation(out + self.shortcut(x))
        return self.dropblock(self.pool(out))


@register_backbone("resnet12")
class ResNet12(nn.Module):
    """Four residual blocks (widths 64-160-320-640 times `width`), then global average pooling.

    A 32x32 image leaves the last block as 2x2 maps, an 84x84 one as 5x5.

    Args:
        width: multiplier on the channel widths (0.5 gives 32-80-160-320 and 320-d features).
        dropblock: DropBlock rate in the last two blocks (0 disables it).
    """

    def __init__(self, width: float = 1.0, dropblock: float = 0.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        widths = [max(1, round(channels * width)) for channels in STANDARD_WIDTHS]
        rates = (0.0, 0.0, dropblock, dropblock)
        blocks, in_channels = [], 3
        for out_channels, rate in zip(widths, rates):
            blocks.append(ResidualBlock(in_channels, out_channels, rate))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = widths[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu", a=0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features [B, feature_dim] of normalized float images [B, 3, H, W]."""
        return torch.flatten(self.blocks(images).mean(dim=(2, 3)), 1)
