"""Convolution blocks shared by the U-Nets of SSM and SGSF."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU; padding keeps the size (or halves it with stride 2 and kernel 4)."""
    padding = (kernel - stride + 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class EncoderBlock(nn.Sequential):
    """Two conv-BN-ReLU; the first halves the resolution (4x4, stride 2) unless ``downsample`` is False."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True):
        first = conv_bn_relu(in_channels, out_channels, 4, 2) if downsample else conv_bn_relu(in_channels, out_channels)
        super().__init__(first, conv_bn_relu(out_channels, out_channels))


class UpBlock(nn.Module):
    """Nearest 2x upsampling, 1x1 projection, concatenation with the skip feature, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(out_channels + skip_channels, out_channels), conv_bn_relu(out_channels, out_channels)
        )

    def forward(self, features: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        upsampled = self.project(F.interpolate(features, size=skip.shape[-2:], mode="nearest"))
        return self.fuse(torch.cat([upsampled, skip], dim=1))


def unet_widths(base_width: int, levels: int = 5) -> list[int]:
    """Channel widths per encoder level: base, 2x, 4x, 8x, then 8x again (SSM's 64-128-256-512-512 at base 64)."""
    return [base_width * min(2**level, 8) for level in range(levels)]
