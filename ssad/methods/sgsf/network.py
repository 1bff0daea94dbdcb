"""SGSF's two networks: a reconstruction auto-encoder (the normal feature extractor) and the guided segmenter.

Both use the same widths per scale; every level halves the resolution, so level ``l`` works at 1/2^(l+1) of
the input (a strided stem keeps the cost of a 128 px input near that of a 64 px one on a CPU). The
auto-encoder has no skip connections (DRAEM's reconstructive structure); its decoder features at every
level are the guidance. The segmenter is a U-Net whose encoder concatenates the guidance feature of the
same scale and fuses it with a 1x1 conv-BN-ReLU; a 1x1 head on every decoder level gives a map per scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssad.nn.blocks import EncoderBlock, UpBlock, conv_bn_relu


def _encoder(widths: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(
        EncoderBlock(in_ch, out_ch) for in_ch, out_ch in zip([3, *widths[:-1]], widths)
    )


class ReconstructionNet(nn.Module):
    """Encoder-decoder without skips, trained to reconstruct normal images (L2 + SSIM)."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.encoder = _encoder(widths)
        self.bottleneck = conv_bn_relu(widths[-1], widths[-1])
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_bn_relu(in_ch, out_ch), conv_bn_relu(out_ch, out_ch))
            for in_ch, out_ch in zip(widths[:0:-1], widths[-2::-1])
        )
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[B, 3, H, W] -> (reconstruction in [0, 1], decoder features from the finest level to the coarsest)."""
        features = images
        for block in self.encoder:
            features = block(features)
        features = self.bottleneck(features)
        guidance = [features]
        for block in self.decoder:
            features = block(F.interpolate(features, scale_factor=2, mode="nearest"))
            guidance.append(features)
        features = F.interpolate(features, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(features)), guidance[::-1]


class GuidedSegmentationNet(nn.Module):
    """U-Net segmenter; encoder level ``l`` is fused with guidance feature ``l``; one logit head per decoder level."""

    def __init__(self, widths: tuple[int, ...], prior: float = 0.5):
        super().__init__()
        self.encoder = _encoder(widths)
        self.fuse = nn.ModuleList(conv_bn_relu(2 * width, width, kernel=1) for width in widths)
        self.up = nn.ModuleList(
            UpBlock(in_ch, skip_ch, skip_ch) for in_ch, skip_ch in zip(widths[:0:-1], widths[-2::-1])
        )
        self.heads = nn.ModuleList(nn.Conv2d(width, 1, 1) for width in widths[::-1])
        for head in self.heads:  # start every pixel at probability ``prior`` (RetinaNet's focal-loss init)
            nn.init.constant_(head.bias, math.log(prior / (1 - prior)))

    def forward(self, images: torch.Tensor, guidance: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logit maps from the coarsest decoder level to the finest (half the input size), each at its own scale."""
        skips = []
        features = images
        for block, fuse, guide in zip(self.encoder, self.fuse, guidance):
            features = fuse(torch.cat([block(features), guide], dim=1))
            skips.append(features)
        features = skips.pop()
        logits = [self.heads[0](features)]
        for up, head in zip(self.up, self.heads[1:]):
            features = up(features, skips.pop())
            logits.append(head(features))
        return logits
