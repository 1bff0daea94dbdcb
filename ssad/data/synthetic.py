"""A synthetic MVTec-layout category with known defects and masks, for tests that need no real data.

Normal images show a shaded disc (a bottle seen from above) on a dark, slightly noisy background, moved
by a few pixels each time. Defects are a dark ``blob`` or a bright ``scratch`` inside the disc, and their
exact masks are written to ``ground_truth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEFECT_TYPES = ("blob", "scratch")


def _normal_image(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, 2)
    radius = np.hypot(yy - cy, xx - cx)
    disc = radius < 0.36
    shade = 0.75 - 0.6 * radius
    image = np.where(disc, shade, 0.12)[..., None] * np.array([1.0, 0.85, 0.6])
    image = image + rng.normal(0, 0.015, image.shape)
    return image


def _defect(rng: np.random.Generator, size: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A mask inside the disc and the value the defect pixels take."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    cy, cx = 0.5 + rng.uniform(-0.15, 0.15, 2)
    if kind == "blob":
        mask = np.hypot((yy - cy) / rng.uniform(0.6, 1.4), xx - cx) < rng.uniform(0.06, 0.1)
        return mask, np.array([0.05, 0.05, 0.05])
    angle = rng.uniform(0, np.pi)
    along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    across = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
    mask = (np.abs(across) < max(1.5 / size, 0.02)) & (np.abs(along) < 0.15)
    return mask, np.array([1.0, 1.0, 1.0])


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)


def make_synthetic_mvtec(
    root: str | Path, category: str = "synthetic", n_train: int = 24, n_test_per_type: int = 4, size: int = 64, seed: int = 0
) -> Path:
    """Write ``root/category`` in the MVTec layout and return its path.

    ``n_test_per_type`` normal test images and as many of each defect type, with masks.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / category
    for i in range(n_train):
        _save(folder / "train" / "good" / f"{i:03d}.png", _normal_image(rng, size))
    for i in range(n_test_per_type):
        _save(folder / "test" / "good" / f"{i:03d}.png", _normal_image(rng, size))
    for kind in DEFECT_TYPES:
        for i in range(n_test_per_type):
            image = _normal_image(rng, size)
            mask, value = _defect(rng, size, kind)
            image[mask] = value
            _save(folder / "test" / kind / f"{i:03d}.png", image)
            _save(folder / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.float64))
    return folder
