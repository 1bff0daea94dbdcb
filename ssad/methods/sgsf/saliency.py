"""Saliency without pretrained weights: spectral residual plus colour contrast to the image border.

SGSF uses a pretrained salient-object detector (CPD); here two classic, weight-free cues are averaged:
the spectral residual (Hou & Zhang, CVPR 2007) marks edges and structure, the colour distance to the
median border colour fills the object body (MVTec objects lie on a plain background). Both are
normalised to [0, 1] per image. Texture categories use ``uniform`` (the whole image is salient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssad.nn.filters import box_filter, gaussian_blur

SALIENCY_MODES = ("combined", "spectral_residual", "contrast", "uniform")


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-8)


def spectral_residual(images: torch.Tensor, work_size: int = 64, sigma: float = 2.0) -> torch.Tensor:
    """Spectral-residual saliency of [B, 3, H, W] images as [B, 1, H, W] in [0, 1].

    The grey image at ``work_size`` px is Fourier transformed; the log amplitude minus its 3x3 mean
    (the "residual") is recombined with the phase, and the squared inverse transform is smoothed.
    """
    grey = F.interpolate(images.mean(dim=1, keepdim=True), size=(work_size, work_size), mode="area")
    spectrum = torch.fft.fft2(grey)
    log_amplitude = torch.log(spectrum.abs() + 1e-8)
    residual = log_amplitude - box_filter(log_amplitude, 3)
    saliency = torch.fft.ifft2(torch.exp(residual) * torch.exp(1j * torch.angle(spectrum))).abs().pow(2)
    saliency = gaussian_blur(saliency, sigma)
    return _normalise(F.interpolate(saliency, size=images.shape[-2:], mode="bilinear", align_corners=False))


def border_contrast(images: torch.Tensor, sigma_fraction: float = 0.03) -> torch.Tensor:
    """Colour distance of each pixel to the median colour of the image border, smoothed: [B, 1, H, W] in [0, 1]."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]
    distance = (images - background).norm(dim=1, keepdim=True)
    return _normalise(gaussian_blur(distance, sigma_fraction * images.shape[-1]))


def saliency_maps(images: torch.Tensor, mode: str = "combined") -> torch.Tensor:
    """Saliency of [B, 3, H, W] images in [0, 1] as [B, 1, H, W], by one of :data:`SALIENCY_MODES`."""
    if mode == "uniform":
        return torch.ones_like(images[:, :1])
    if mode == "spectral_residual":
        return spectral_residual(images)
    if mode == "contrast":
        return border_contrast(images)
    if mode == "combined":
        return _normalise(spectral_residual(images) + border_contrast(images))
    raise ValueError(f"unknown saliency mode {mode!r}; choose one of {', '.join(SALIENCY_MODES)}")


def otsu_thresholds(values: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Otsu's threshold of each row of [B, N] values in [0, 1]: maximises the between-class variance."""
    index = (values.clamp(0, 1) * (bins - 1)).round().long()
    counts = torch.zeros(values.shape[0], bins).scatter_add_(1, index, torch.ones_like(values))
    probability = counts / counts.sum(dim=1, keepdim=True)
    centres = torch.linspace(0, 1, bins)
    weight_low = probability.cumsum(dim=1)
    mass_low = (probability * centres).cumsum(dim=1)
    total_mass = mass_low[:, -1:]
    between = (total_mass * weight_low - mass_low).pow(2) / (weight_low * (1 - weight_low)).clamp_min(1e-12)
    return centres[between.argmax(dim=1)] + 0.5 / (bins - 1)


def salient_regions(saliency: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, H, W] foreground: saliency above its Otsu threshold; everything when the map is flat."""
    flat = saliency.flatten(1)
    thresholds = otsu_thresholds(flat).view(-1, 1, 1, 1)
    is_flat = (flat.amax(dim=1) - flat.amin(dim=1) < 1e-3).view(-1, 1, 1, 1)
    return (saliency > thresholds) | is_flat
