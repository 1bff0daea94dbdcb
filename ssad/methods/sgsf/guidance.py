"""Normal-image guidance: a bank of training normals stored with the weights, and contrast-set retrieval.

The bank keeps ``K`` training normals as uint8 pixels plus their retrieval features, so a single uploaded
image is matched offline: its contrast set is the ``n`` bank images of highest cosine similarity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def retrieval_features(images: torch.Tensor, size: int) -> torch.Tensor:
    """Unit-length [B, D] descriptors: the image area-downsampled to ``size`` px, each channel mean-centred."""
    small = F.interpolate(images, size=(size, size), mode="area")
    small = small - small.mean(dim=(-2, -1), keepdim=True)
    return F.normalize(small.flatten(1), dim=1)


def farthest_point_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` row indices covering the feature space: start nearest the mean, then always the least similar.

    When ``count`` exceeds the rows, the order repeats (a bank larger than the training set holds copies).
    """
    similarity = features @ features.T
    chosen = [int((features @ features.mean(dim=0)).argmax())]
    closest = similarity[chosen[0]].clone()
    for _ in range(min(count, len(features)) - 1):
        next_index = int(closest.argmin())
        chosen.append(next_index)
        closest = torch.maximum(closest, similarity[next_index])
    return torch.tensor([chosen[i % len(chosen)] for i in range(count)])


class GuidanceBank(nn.Module):
    """``slots`` normal images (uint8 buffers) and their retrieval features (float buffers)."""

    def __init__(self, slots: int, shape: tuple[int, int], retrieval_size: int):
        super().__init__()
        self.retrieval_size = retrieval_size
        self.register_buffer("images", torch.zeros(slots, 3, *shape, dtype=torch.uint8))
        self.register_buffer("features", torch.zeros(slots, 3 * retrieval_size * retrieval_size))

    def fill(self, images: torch.Tensor) -> None:
        """Store [slots, 3, S, S] images in [0, 1] and their features."""
        self.images.copy_((images * 255).round().to(torch.uint8))
        self.features.copy_(retrieval_features(self.pixels(), self.retrieval_size))

    def pixels(self, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Bank images (all, or the given slots) as float in [0, 1]."""
        images = self.images if slots is None else self.images[slots]
        return images.float() / 255

    def contrast_sets(self, images: torch.Tensor, n: int, excluded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n`` most similar bank slots of each image, best first, and their cosine similarities ([B, n] each).

        ``excluded`` ([B, slots] bool) removes slots, e.g. the copy of a training image from its own contrast set.
        """
        similarity = retrieval_features(images, self.retrieval_size) @ self.features.float().T
        if excluded is not None:
            similarity = similarity.masked_fill(excluded, float("-inf"))
        values, slots = similarity.topk(min(n, similarity.shape[1]), dim=1)
        return slots, values
