"""SGSF's settings, apart from the method so that forging (and selection) can use them without the networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ssad.errors import SsadError
from ssad.methods.base import MethodConfig
from ssad.methods.sgsf.saliency import SALIENCY_MODES


@dataclass
class SGSFConfig(MethodConfig):
    """SGSF's settings; the paper's values are noted where ours differ."""

    size: int = 128  # paper: 256
    epochs: int = 200  # segmentation epochs (paper: iterations not given)
    recon_epochs: int = 30
    batch_size: int = 16  # paper: 16
    lr: float = 1e-3  # paper: 1e-4
    lr_milestones: tuple[float, ...] = (0.75, 0.9)  # paper: x0.1 at 50/70/90 % of iterations
    widths: tuple[int, ...] = (16, 32, 64, 64)
    saliency: str = "combined"
    perlin_max_exponent: int = 4
    mask_sigma_range: tuple[float, float] = (0.5, 1.5)
    min_mask_pixels: int = 16
    mask_max_draws: int = 50
    stroke_fraction: float = 0.5  # share of forged masks that are thin strokes (not in the paper)
    stroke_length_range: tuple[float, float] = (0.1, 0.5)  # of the image diagonal
    stroke_width_range: tuple[float, float] = (1.0, 3.0)  # pixels at the input size
    opacity_range: tuple[float, float] = (0.2, 1.0)
    source_weights: tuple[float, ...] = (0.4, 0.3, 0.15, 0.15)  # patch, Perlin colour, stripes, checkerboard
    patch_zoom_range: tuple[float, float] = (0.5, 2.0)
    forged_fraction: float = 0.75  # 3 forged : 1 normal
    contrast_set_size: int = 4
    guidance_bank_size: int = 32
    retrieval_size: int = 16
    ssim_weight: float = 1.0
    focal_gamma: float = 2.0
    side_weight: float = 0.5
    head_prior: float = 0.05  # initial anomaly probability of every pixel (not in the paper)
    score_filter: int = 9

    scoring_fields: ClassVar[tuple[str, ...]] = MethodConfig.scoring_fields + ("score_filter",)

    def __post_init__(self) -> None:
        if self.saliency not in SALIENCY_MODES:
            raise SsadError(f"SGSF saliency {self.saliency!r} is not one of: {', '.join(SALIENCY_MODES)}")
