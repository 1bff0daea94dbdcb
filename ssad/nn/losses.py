"""Image similarity measures used as losses and as anomaly maps (SSIM, multi-scale GMS), and the focal loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssad.nn.filters import gaussian_kernel1d, median_blur3, prewitt_magnitude

GMS_C = 0.0026


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of two [B, C, H, W] images in [0, 1] (11x11 Gaussian window, sigma 1.5)."""
    kernel1d = gaussian_kernel1d(sigma, truncate=(window // 2) / sigma).to(x)
    channels = x.shape[1]
    kernel = (kernel1d[:, None] * kernel1d[None, :]).expand(channels, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=window // 2, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over pixels, channels and batch."""
    return ssim_map(x, y).mean()


def gms_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude similarity in (0, 1] of two [B, C, H, W] images, compared in grey after a 3x3 median."""
    gx = prewitt_magnitude(median_blur3(x.mean(dim=1, keepdim=True)))
    gy = prewitt_magnitude(median_blur3(y.mean(dim=1, keepdim=True)))
    return (2 * gx * gy + GMS_C) / (gx.pow(2) + gy.pow(2) + GMS_C)


def _pyramid(x: torch.Tensor, y: torch.Tensor, scales: int):
    for _ in range(scales):
        yield x, y
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)


def msgms_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Mean of (1 - GMS) over the image and over ``scales`` 2x average-pooled levels."""
    return torch.stack([(1 - gms_map(a, b)).mean() for a, b in _pyramid(x, y, scales)]).mean()


def msgms_anomaly_map(x: torch.Tensor, y: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Per-pixel ``1 - mean GMS`` over ``scales`` levels, each upsampled bilinearly: [B, 1, H, W] in [0, 1).

    SSM's code returns ``(1 - sum of the GMS levels) / 4``, i.e. ``mean GMS`` shifted by a constant and
    negated; this is the same ordering with a plain meaning (0 = identical gradients).
    """
    size = x.shape[-2:]
    levels = [
        F.interpolate(gms_map(a, b), size=size, mode="bilinear", align_corners=False)
        for a, b in _pyramid(x, y, scales)
    ]
    return 1 - torch.stack(levels).mean(dim=0)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss ``-(1 - p_t)^gamma log p_t`` of per-pixel logits against a {0, 1} target.

    Down-weights the many easy background pixels so that small forged regions drive segmentation
    (DRAEM, SGSF: gamma 2).
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-cross_entropy)
    return ((1 - p_true).pow(gamma) * cross_entropy).mean()
