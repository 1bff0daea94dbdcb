"""Fixed image filters as tensor ops (Gaussian, median, Prewitt), batched and differentiable."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ``truncate * sigma`` (scipy's convention)."""
    radius = max(1, int(truncate * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B, C, H, W] with reflected borders, like ``scipy.ndimage.gaussian_filter``."""
    if sigma <= 0:
        return images
    kernel = gaussian_kernel1d(sigma).to(images)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    # Reflect padding needs the pad to be smaller than the side; fall back to replicate on tiny maps.
    mode = "reflect" if radius < min(images.shape[-2:]) else "replicate"
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode=mode), horizontal, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode=mode), vertical, groups=channels)


def median_blur3(images: torch.Tensor) -> torch.Tensor:
    """3x3 median filter of [B, C, H, W] with reflected borders."""
    b, c, h, w = images.shape
    patches = F.unfold(F.pad(images, (1, 1, 1, 1), mode="reflect").reshape(b * c, 1, h + 2, w + 2), 3)
    return patches.median(dim=1).values.reshape(b, c, h, w)


_PREWITT_X = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def prewitt_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of [B, 1, H, W] with the Prewitt kernels divided by 3 (as in RIAD and SSM)."""
    kernels = torch.stack([_PREWITT_X, _PREWITT_X.T]).unsqueeze(1).to(grey)
    gradients = F.conv2d(grey, kernels, padding=1)
    return torch.sqrt(gradients.pow(2).sum(dim=1, keepdim=True) + 1e-12)


def box_filter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean filter of odd ``size`` with the same output size (counts only pixels inside the image)."""
    padding = size // 2
    return F.avg_pool2d(images, size, stride=1, padding=padding, count_include_pad=False)

