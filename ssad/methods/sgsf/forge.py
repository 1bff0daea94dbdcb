"""Forged anomalies: saliency-guided Perlin masks filled from an anomaly source with a random opacity.

The Saliency Augmentation Module multiplies a Perlin field by the image's saliency and cuts the product
with an adaptive threshold inside the salient region, so the irregular masks land on the object; a share
of the masks (``stroke_fraction``) are thin curved strokes instead, the shape of cracks and scratches. The
mask is filled from a procedural texture (Perlin colour noise, stripes, checkerboard) or a transformed
patch of another training image, recoloured, and blended with opacity ``alpha``:
``forged = image + mask * alpha * (source - image)`` (unchanged outside the mask). A grey image gets a grey
fill: a coloured forgery on a grey data set would teach the segmenter that colour alone is the anomaly,
which no real defect of a grey camera shows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssad.errors import DataError
from ssad.methods.sgsf.config import SGSFConfig
from ssad.methods.sgsf.saliency import salient_regions, saliency_maps
from ssad.nn.perlin import fractal_perlin_noise, perlin_noise


SOURCE_KINDS = ("patch", "perlin_colour", "stripes", "checkerboard")


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def saliency_perlin_mask(
    saliency: torch.Tensor, region: torch.Tensor, config: SGSFConfig, generator: torch.Generator
) -> torch.Tensor:
    """A binary [1, H, W] mask inside the salient ``region``; empty draws are redrawn.

    Perlin noise with 2^u x 2^v cells (u, v uniform in 0..``perlin_max_exponent``, DRAEM's scales) is
    scaled to [0, 1] and multiplied by the saliency; the cut is mean + k std of that product over the
    region, k uniform in ``mask_sigma_range`` (the adaptive threshold), so the masked share of the object
    stays similar on every image while the shapes vary.
    """
    height, width = saliency.shape[-2:]
    inside = region[0]
    for _ in range(config.mask_max_draws):
        cells_y = 2 ** _randint(0, config.perlin_max_exponent, generator)
        cells_x = 2 ** _randint(0, config.perlin_max_exponent, generator)
        noise = perlin_noise(height, width, cells_y, cells_x, generator)
        noise = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-8)
        product = noise * saliency[0]
        values = product[inside]
        threshold = values.mean() + _uniform(*config.mask_sigma_range, generator) * values.std()
        mask = (product > threshold) & inside
        if int(mask.sum()) >= config.min_mask_pixels:
            return mask[None].float()
    raise DataError(
        f"no forged mask of {config.min_mask_pixels}+ pixels in {config.mask_max_draws} draws: the salient region is too small"
        " (try saliency='uniform')"
    )


def saliency_stroke_mask(
    saliency: torch.Tensor, region: torch.Tensor, config: SGSFConfig, generator: torch.Generator
) -> torch.Tensor | None:
    """A thin curved stroke as a binary [1, H, W] mask inside the salient ``region``: the shape of a crack or a
    scratch, which Perlin blobs never take.

    The stroke starts at a region pixel drawn by saliency, runs along a quadratic Bezier curve whose length
    is a share (``stroke_length_range``) of the image's diagonal, and is ``stroke_width_range`` pixels
    wide; it is clipped to the region, and strokes under ``min_mask_pixels`` are redrawn. None when no
    draw fits (a region of scattered specks, as texture saliency can give).
    """
    height, width = saliency.shape[-2:]
    weights = (saliency[0] * region[0]).flatten().clamp_min(0) + 1e-6 * region[0].flatten()
    diagonal = math.hypot(height, width)
    for _ in range(config.mask_max_draws):
        start_index = int(torch.multinomial(weights, 1, generator=generator))
        start = torch.tensor([start_index // width, start_index % width], dtype=torch.float32)
        length = _uniform(*config.stroke_length_range, generator) * diagonal
        angle = _uniform(0, 2 * math.pi, generator)
        end = start + length * torch.tensor([math.sin(angle), math.cos(angle)])
        bend = (torch.rand(2, generator=generator) - 0.5) * length * 0.6
        control = (start + end) / 2 + bend
        t = torch.linspace(0, 1, max(8, int(2 * length)))[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end  # [P, 2] (row, column)
        half_width = _uniform(*config.stroke_width_range, generator) / 2
        (top, left), (bottom, right) = (curve.amin(dim=0) - half_width).floor(), (curve.amax(dim=0) + half_width).ceil()
        top, left = max(0, int(top)), max(0, int(left))
        bottom, right = min(height, int(bottom) + 1), min(width, int(right) + 1)
        mask = torch.zeros(height, width, dtype=torch.bool)
        if bottom > top and right > left:  # distances only inside the curve's bounding box
            rows, columns = _pixel_grid((bottom - top, right - left))
            pixels = torch.stack([rows.flatten() + top, columns.flatten() + left], dim=1)
            near = torch.cdist(pixels, curve).amin(dim=1) <= half_width
            mask[top:bottom, left:right] = near.view(bottom - top, right - left)
        mask &= region[0]
        if int(mask.sum()) >= config.min_mask_pixels:
            return mask[None].float()
    return None


def _pixel_grid(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    rows, columns = (torch.arange(side, dtype=torch.float32) for side in shape)
    return rows[:, None].expand(shape), columns[None, :].expand(shape)


def _two_colour(pattern: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Map a [H, W] pattern in [0, 1] between two random colours: [3, H, W]."""
    first, second = torch.rand(2, 3, 1, 1, generator=generator)
    return first + (second - first) * pattern[None]


def procedural_texture(kind: str, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A [3, H, W] texture in [0, 1]: Perlin colour noise, stripes or a checkerboard at a random scale and angle."""
    if kind == "perlin_colour":
        cells = 2 ** _randint(1, 3, generator)
        channels = torch.stack([fractal_perlin_noise(*shape, cells, 3, generator) for _ in range(3)])
        low = channels.amin(dim=(1, 2), keepdim=True)
        high = channels.amax(dim=(1, 2), keepdim=True)
        return (channels - low) / (high - low).clamp_min(1e-8)
    ys, xs = _pixel_grid(shape)
    size = max(shape)
    angle = _uniform(0, math.pi, generator)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    period = _uniform(size / 32, size / 5, generator)
    if kind == "stripes":
        return _two_colour((torch.sin(2 * math.pi * along / period) > 0).float(), generator)
    if kind == "checkerboard":
        across = -xs * math.sin(angle) + ys * math.cos(angle)
        return _two_colour(((torch.floor(along / period) + torch.floor(across / period)) % 2), generator)
    raise ValueError(f"unknown texture {kind!r}")


def transformed_patch(image: torch.Tensor, config: SGSFConfig, generator: torch.Generator) -> torch.Tensor:
    """``image`` [3, H, W] rotated, zoomed, shifted and possibly flipped (reflected at the borders)."""
    angle = _uniform(-math.pi, math.pi, generator)
    zoom = _uniform(*config.patch_zoom_range, generator)
    shift_y, shift_x = (torch.rand(2, generator=generator) * 2 - 1).tolist()
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[cos, -sin, shift_x], [sin, cos, shift_y]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
    patch = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    return patch.flip(-1) if bool(torch.rand((), generator=generator) < 0.5) else patch


def recolour(source: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One or two random colour changes (DRAEM's augmenter families): invert, solarise, posterise, gamma,
    brightness/contrast, channel shuffle."""
    for _ in range(_randint(1, 2, generator)):
        choice = _randint(0, 5, generator)
        if choice == 0:
            source = 1 - source
        elif choice == 1:
            source = torch.where(source > _uniform(0.3, 0.8, generator), 1 - source, source)
        elif choice == 2:
            levels = 2 ** _randint(1, 3, generator)
            source = torch.floor(source * levels).clamp(max=levels - 1) / (levels - 1)
        elif choice == 3:
            source = source.clamp_min(0).pow(_uniform(0.5, 2.0, generator))
        elif choice == 4:
            mean = source.mean()
            source = (source - mean) * _uniform(0.5, 1.8, generator) + mean + _uniform(-0.3, 0.3, generator)
        else:
            source = source[torch.randperm(3, generator=generator)]
    return source.clamp(0, 1)


def is_grey(image: torch.Tensor) -> bool:
    """Whether a [3, H, W] image has the same value in every channel (a grey scan loaded as RGB)."""
    return bool((image.amax(dim=0) - image.amin(dim=0)).max() < 1 / 512)


def anomaly_source(images: torch.Tensor, index: int, config: SGSFConfig, generator: torch.Generator) -> torch.Tensor:
    """A recoloured [3, H, W] fill for a forged region of ``images[index]``: a texture or another image's patch,
    grey when ``images[index]`` is."""
    weights = torch.tensor(config.source_weights, dtype=torch.float32)
    kind = SOURCE_KINDS[int(torch.multinomial(weights, 1, generator=generator))]
    if kind == "patch" and len(images) > 1:
        other = (index + _randint(1, len(images) - 1, generator)) % len(images)
        source = transformed_patch(images[other], config, generator)
    else:
        source = procedural_texture("perlin_colour" if kind == "patch" else kind, tuple(images.shape[-2:]), generator)
    source = recolour(source, generator)
    return source.mean(dim=0, keepdim=True).expand_as(source) if is_grey(images[index]) else source


def forge(
    images: torch.Tensor,
    index: int,
    saliency: torch.Tensor,
    region: torch.Tensor,
    config: SGSFConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forge an anomaly on ``images[index]`` ([N, 3, H, W] training set): returns (forged [3, H, W], mask [1, H, W])."""
    image = images[index]
    stroke = config.stroke_fraction > 0 and bool(torch.rand((), generator=generator) < config.stroke_fraction)
    mask = saliency_stroke_mask(saliency, region, config, generator) if stroke else None
    if mask is None:
        mask = saliency_perlin_mask(saliency, region, config, generator)
    source = anomaly_source(images, index, config, generator)
    opacity = _uniform(*config.opacity_range, generator)
    return image + mask * opacity * (source - image), mask


def forge_batch(
    images: torch.Tensor,
    indices: torch.Tensor,
    saliency: torch.Tensor,
    regions: torch.Tensor,
    config: SGSFConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: each image forged with probability ``forged_fraction`` (3:1 in SGSF), else kept normal."""
    inputs, masks = [], []
    for index in indices.tolist():
        if bool(torch.rand((), generator=generator) < config.forged_fraction):
            forged, mask = forge(images, index, saliency[index], regions[index], config, generator)
        else:
            forged, mask = images[index], torch.zeros_like(images[index][:1])
        inputs.append(forged)
        masks.append(mask)
    return torch.stack(inputs), torch.stack(masks)


def forge_images(
    images: torch.Tensor, config: SGSFConfig, generator: torch.Generator, copies: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` forged versions of each of the [N, 3, H, W] images (patches come from the others), in order
    copy by copy: (forged [copies * N, 3, H, W] in [0, 1], masks [copies * N, 1, H, W])."""
    saliency = saliency_maps(images, config.saliency)
    regions = salient_regions(saliency)
    pairs = [
        forge(images, index, saliency[index], regions[index], config, generator)
        for _ in range(copies)
        for index in range(len(images))
    ]
    return torch.stack([forged for forged, _ in pairs]).clamp(0, 1), torch.stack([mask for _, mask in pairs])
