"""Data: the three dataset layouts, predictable image decoding with limits, and a synthetic generator."""

from ssad.data.datasets import AnomalyDataset, Sample, image_files, open_dataset
from ssad.data.images import MAX_PIXELS, MIN_SIDE, fit_within, image_to_tensor, input_shape, load_image, load_image_at_most, load_mask, median_aspect, resize_image
from ssad.data.synthetic import make_synthetic_mvtec

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "AnomalyDataset",
    "Sample",
    "fit_within",
    "image_files",
    "image_to_tensor",
    "input_shape",
    "load_image",
    "load_image_at_most",
    "load_mask",
    "make_synthetic_mvtec",
    "median_aspect",
    "open_dataset",
    "resize_image",
]
