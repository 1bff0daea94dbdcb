"""ST-SSAD's detector: a small ResNet trained from scratch, with an embedding head and a logit."""

from __future__ import annotations

import torch
import torch.nn as nn

from ssad.nn.blocks import conv_bn_relu

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SubsampledPointwiseConv(nn.Conv2d):
    """A strided 1x1 convolution computed as subsampling, then a stride-1 1x1 convolution.

    The same weights and output as ``nn.Conv2d(in_channels, out_channels, 1, stride=stride)``. It exists
    because oneDNN's weight gradient of the strided 1x1 convolution corrupts memory (the process aborts)
    on channels-last inputs with 2 to 7 channels on AVX2 CPUs, as measured with torch 2.13.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 1, bias=False)
        self.subsample = stride

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features[:, :, :: self.subsample, :: self.subsample])


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN with a (projected when the shape changes) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, 3, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(SubsampledPointwiseConv(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(features) + self.shortcut(features))


class Detector(nn.Module):
    """Stem (stride 2), one stride-2 basic block per width, global pooling, MLP embedding head, logit.

    ``forward`` returns the embedding [B, E], the anomaly logit [B] and every stage's feature map.
    Inputs are images in [0, 1]; ImageNet normalisation happens inside.
    """

    def __init__(self, widths: tuple[int, ...], hidden: int, embedding_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = conv_bn_relu(3, widths[0], 3, 2)
        self.stages = nn.ModuleList(
            BasicBlock(in_ch, out_ch, 2) for in_ch, out_ch in zip([widths[0], *widths[:-1]], widths)
        )
        self.head = nn.Sequential(
            nn.Linear(widths[-1], hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embedding_dim)
        )
        self.classifier = nn.Sequential(nn.BatchNorm1d(embedding_dim), nn.ReLU(), nn.Linear(embedding_dim, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        features = self.stem(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last))
        maps = []
        for stage in self.stages:
            features = stage(features)
            maps.append(features)
        embedding = self.head(features.mean(dim=(2, 3)))
        return embedding, self.classifier(embedding)[:, 0], maps
