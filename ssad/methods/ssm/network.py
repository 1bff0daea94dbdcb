"""SSM's inpainting U-Net: the encoder sees the masked image, the mask enters the decoder via mask blocks."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssad.nn.blocks import EncoderBlock, UpBlock, unet_widths


class MaskBlock(nn.Module):
    """Residual mask conditioning: BN(feature) ++ mask -> conv-BN-ReLU -> conv, gated by the mask, added back."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.body = nn.Sequential(
            nn.Conv2d(channels + 1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = F.interpolate(mask, size=features.shape[-2:], mode="nearest")
        return features + self.body(torch.cat([self.norm(features), mask], dim=1)) * mask


class MaskedUNet(nn.Module):
    """Five encoder levels, four up blocks, five mask blocks, and a tanh head of 3 image + 1 mask channels."""

    def __init__(self, base_width: int = 32):
        super().__init__()
        widths = unet_widths(base_width)
        self.encoder = nn.ModuleList(
            EncoderBlock(in_ch, out_ch, downsample=level > 0)
            for level, (in_ch, out_ch) in enumerate(zip([3, *widths[:-1]], widths))
        )
        decoder_widths = widths[-2::-1]  # 8w, 4w, 2w, w at base w
        self.up = nn.ModuleList(
            UpBlock(in_ch, skip_ch, out_ch)
            for in_ch, skip_ch, out_ch in zip([widths[-1], *decoder_widths[:-1]], widths[-2::-1], decoder_widths)
        )
        self.mask_blocks = nn.ModuleList(MaskBlock(ch) for ch in [widths[-1], *decoder_widths])
        self.head = nn.Conv2d(widths[0], 4, 3, padding=1)

    def forward(self, masked_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] image with hidden pixels at 0 and [B, 1, H, W] mask -> [B, 4, H, W] in [-1, 1]."""
        skips = []
        features = masked_image
        for block in self.encoder:
            features = block(features)
            skips.append(features)
        features = self.mask_blocks[0](skips.pop(), mask)
        for up, mask_block in zip(self.up, self.mask_blocks[1:]):
            features = mask_block(up(features, skips.pop()), mask)
        return torch.tanh(self.head(features))
