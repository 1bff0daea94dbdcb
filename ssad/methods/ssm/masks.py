"""SSM's complementary random masks: scattered k x k cells, every pixel hidden in exactly one mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def complementary_masks(shape: tuple[int, int], cell: int, n_masks: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_masks`` masks [n, 1, H, W] (1 = visible, 0 = hidden) that partition the image's cells.

    The (H/cell) x (W/cell) cells are randomly permuted and cut into ``n_masks`` equal groups (SSM's
    ``gen_mask``; a remainder makes the last group smaller); mask i hides the cells of group i.
    """
    height, width = shape
    if height % cell or width % cell:
        raise ValueError(f"cell size {cell} does not divide the input shape {height} x {width}")
    rows, columns = height // cell, width // cell
    n_cells = rows * columns
    group_size = -(-n_cells // n_masks)
    order = torch.randperm(n_cells, generator=generator)
    group = torch.empty(n_cells, dtype=torch.long)
    group[order] = torch.arange(n_cells) // group_size
    hidden = group.view(1, rows, columns) == torch.arange(n_masks).view(-1, 1, 1)
    visible = (~hidden).float().unsqueeze(1)
    return F.interpolate(visible, scale_factor=cell, mode="nearest")


def uncover(masks: torch.Tensor, uncovered: torch.Tensor) -> torch.Tensor:
    """Make the ``uncovered`` pixels ([H, W] bool) visible in every mask."""
    return torch.maximum(masks, uncovered.to(masks).expand_as(masks))
