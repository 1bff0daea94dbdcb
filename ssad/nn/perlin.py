"""Perlin gradient noise as tensor ops: the irregular blobs of DRAEM-style masks and procedural textures."""

from __future__ import annotations

import math

import torch


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(height: int, width: int, cells_y: int, cells_x: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One [height, width] field of 2-D Perlin noise with ``cells_y`` x ``cells_x`` lattice cells, about in [-1, 1].

    Random unit gradients sit on the (cells + 1)^2 lattice corners; each pixel blends the four corner
    dot products with the quintic fade, as DRAEM's ``rand_perlin_2d`` (scaled by sqrt 2), but any size works.
    """
    angles = 2 * math.pi * torch.rand(cells_y + 1, cells_x + 1, generator=generator)
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    ys = torch.arange(height, dtype=torch.float32) * (cells_y / height)
    xs = torch.arange(width, dtype=torch.float32) * (cells_x / width)
    y0, x0 = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = gradients.index_select(0, y0 + dy).index_select(1, x0 + dx)
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return math.sqrt(2) * torch.lerp(top, bottom, ty)


def fractal_perlin_noise(
    height: int, width: int, cells: int, octaves: int, generator: torch.Generator | None = None, persistence: float = 0.5
) -> torch.Tensor:
    """Sum of ``octaves`` Perlin fields, each with twice the cells and ``persistence`` times the amplitude."""
    total = torch.zeros(height, width)
    for octave in range(octaves):
        frequency = cells * 2**octave
        total += persistence**octave * perlin_noise(height, width, frequency, frequency, generator)
    return total
