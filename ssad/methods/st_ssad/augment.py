"""ST-SSAD's differentiable augmentations: CutDiff (a smooth CutOut) and rotation, with learnable strengths.

Both are plain functions of physical values (area ratio, aspect ratio, angle) that leave the image
unchanged at zero strength, wrapped in modules whose learnable scalars live in [0, 1] (through a
sigmoid, so their gradient never dies at a bound) and map to the physical values log-linearly: the
aspect as in DSV's ``SmoothCutOut``, the area too (DSV: linearly), since the ranges span two decades.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BUMP_WIDTH = 0.2
"""DSV's bump exp(-||d||^2 / 0.2), d = pixel offset / patch size: a Gaussian of sigma sqrt(0.1) x patch side."""


def _pixel_averaged_gaussian(length: int, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """[B, length]: the mean of exp(-(t - c)^2 / (2 sigma^2)) over each unit pixel [i, i + 1].

    Averaging over the pixel (with erf) instead of sampling at its centre makes the bump vanish
    continuously as sigma -> 0, so zero area is exactly no change, and keeps gradients smooth.
    """
    edges = torch.arange(length + 1, dtype=centres.dtype, device=centres.device)
    sigmas = sigmas.clamp_min(1e-12)[:, None]
    cumulative = torch.erf((edges[None] - centres[:, None]) / (sigmas * math.sqrt(2)))
    return sigmas * math.sqrt(math.pi / 2) * (cumulative[:, 1:] - cumulative[:, :-1])


def cut_diff(
    images: torch.Tensor, area: torch.Tensor, aspect: torch.Tensor, centres: torch.Tensor, swap: torch.Tensor
) -> torch.Tensor:
    """Subtract a smooth patch-shaped bump from [B, 3, H, W] images in [0, 1] and clip to [0, 1].

    ``area`` is the patch area as a share of the image and ``aspect`` its height/width ratio (scalars
    or [B]); ``centres`` [B, 2] are (y, x) in [0, 1]; ``swap`` [B] bool exchanges height and width.
    """
    height, width = images.shape[-2:]
    batch = images.shape[0]
    area = torch.as_tensor(area, dtype=images.dtype, device=images.device).expand(batch)
    aspect = torch.as_tensor(aspect, dtype=images.dtype, device=images.device).expand(batch)
    patch_h = torch.sqrt(area * aspect)
    patch_w = torch.sqrt(area / aspect)
    patch_h, patch_w = torch.where(swap, patch_w, patch_h), torch.where(swap, patch_h, patch_w)
    spread = math.sqrt(BUMP_WIDTH / 2)
    rows = _pixel_averaged_gaussian(height, centres[:, 0] * height, spread * patch_h * height)
    cols = _pixel_averaged_gaussian(width, centres[:, 1] * width, spread * patch_w * width)
    bump = rows[:, :, None] * cols[:, None, :]
    return (images - bump[:, None]).clamp(0, 1)


def rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate [B, C, H, W] images by ``angles`` (radians, scalar or [B]) about their centre, bilinear.

    Borders are filled by reflection, so the rotation adds no black corners a detector could key on.
    """
    batch = images.shape[0]
    angles = torch.as_tensor(angles, dtype=images.dtype, device=images.device).expand(batch)
    cos, sin, zero = torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class LearnableAugmentation(nn.Module):
    """Learnable strengths in [0, 1] (stored as logits) and the augmentation they parameterise."""

    names: tuple[str, ...]
    """The strengths' names, one per parameter."""
    units: tuple[str, ...]
    """The physical values' names, one per parameter, in the same order."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(len(self.names)))

    @property
    def strengths(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def set_strengths(self, values: list[float] | tuple[float, ...]) -> None:
        """Start from given strengths in (0, 1), e.g. a candidate initialisation."""
        values = torch.as_tensor(values, dtype=self.logits.dtype).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.logits.copy_(torch.log(values / (1 - values)))

    def to_physical(self, strengths: torch.Tensor) -> torch.Tensor:
        """Physical values of [..., P] strengths, parameter by parameter (each depends on its own strength only)."""
        raise NotImplementedError

    def physical(self) -> dict[str, float]:
        """The current hyper-parameters in their own units, for logs and captions."""
        return {unit: round(v, 5) for unit, v in zip(self.units, self.to_physical(self.strengths).tolist())}

    def bounds(self) -> dict[str, list[float]]:
        """Each physical value's [low, high], at strengths 0 and 1."""
        ends = self.to_physical(torch.tensor([[0.0] * len(self.names), [1.0] * len(self.names)]))
        return {unit: [round(v, 5) for v in ends[:, i].tolist()] for i, unit in enumerate(self.units)}

    def physical_axes(self, axes: tuple[tuple[float, ...], ...]) -> dict[str, list[float]]:
        """The physical values along each parameter's axis of strengths."""
        return {
            unit: [round(v, 5) for v in self.to_physical(torch.tensor(axis)[:, None].expand(-1, len(self.names)))[:, i].tolist()]
            for i, (unit, axis) in enumerate(zip(self.units, axes))
        }

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _log_linear(strength: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """The value at ``strength`` in [0, 1] on a log scale from ``value_range[0]`` to ``value_range[1]``."""
    log_low, log_high = math.log(value_range[0]), math.log(value_range[1])
    return torch.exp(log_low + (log_high - log_low) * strength)


class CutDiff(LearnableAugmentation):
    """CutDiff: strengths (area, aspect) -> area ratio in ``area_range`` and aspect in ``aspect_range``, both log-linear."""

    names = ("area", "aspect")
    units = ("area_ratio", "aspect_ratio")

    def __init__(self, area_range: tuple[float, float], aspect_range: tuple[float, float]):
        super().__init__()
        self.area_range = tuple(area_range)
        self.aspect_range = tuple(aspect_range)

    def to_physical(self, strengths: torch.Tensor) -> torch.Tensor:
        return torch.stack([_log_linear(strengths[..., 0], self.area_range), _log_linear(strengths[..., 1], self.aspect_range)], dim=-1)

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = images.shape[0]
        centres = torch.rand(batch, 2, generator=generator).to(images)
        swap = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
        area, aspect = self.to_physical(self.strengths)
        return cut_diff(images, area, aspect, centres, swap)


class Rotation(LearnableAugmentation):
    """Rotation by strength x ``max_degrees``, clockwise or anticlockwise at random per image."""

    names = ("angle",)
    units = ("angle_degrees",)

    def __init__(self, max_degrees: float):
        super().__init__()
        self.max_degrees = max_degrees

    def to_physical(self, strengths: torch.Tensor) -> torch.Tensor:
        return strengths * self.max_degrees

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        signs = torch.where(torch.rand(images.shape[0], generator=generator) < 0.5, -1.0, 1.0).to(images)
        return rotate(images, signs * self.strengths[0] * math.radians(self.max_degrees))
