"""The one result type every method returns, and the calibration that gives its numbers a meaning.

Metrics, the visualisation and the app read these fields only; none of them sees a method's own tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

PanelKind = Literal["image", "mask", "heat"]


@dataclass(frozen=True)
class Panel:
    """One picture inside an animation frame.

    ``image``: RGB float in [0, 1], HxWx3. ``mask``: grey float in [0, 1], HxW (1 = visible / white).
    ``heat``: an anomaly map in the method's raw units, HxW, coloured with the model's calibration.
    """

    title: str
    array: np.ndarray
    kind: PanelKind = "image"


@dataclass(frozen=True)
class Frame:
    """One step of a method's inner workings (a refinement iteration, a tuning step, a decoder scale)."""

    caption: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Calibration:
    """Score statistics of held-out normal images, stored with the weights.

    They turn a single image's raw score into a label (``score > image_threshold``) and its map into
    calibrated units (0 = a typical normal pixel, 1 = the pixel threshold), so no single image is ever
    min-max normalised on its own.
    """

    image_mean: float
    image_std: float
    image_threshold: float
    pixel_mean: float
    pixel_threshold: float
    n_images: int
    rule: str
    pixel_max: float | None = None
    """The largest map value on the held-out normals; None in calibrations made before it was recorded."""

    @classmethod
    def from_normal_scores(
        cls, image_scores: np.ndarray, maps: np.ndarray, sigmas: float
    ) -> Calibration:
        """Image threshold = mean + ``sigmas`` std of normal image scores; pixel threshold likewise for the
        per-image map maxima, but never above the largest of them.

        The cap keeps the pixel threshold where the map can reach: with some 20 held-out maxima, one
        wide outlier can put mean + 3 std above anything a probability map reaches (an always-empty mask),
        while no normal pixel seen is above the largest maximum. The spread has a small floor, so that a
        handful of identical normal scores still gives a threshold above the mean.
        """
        image_scores = np.asarray(image_scores, dtype=np.float64)
        map_maxima = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1).max(axis=1)
        pixel_mean = float(np.mean(maps))
        pixel_max = float(map_maxima.max())
        image_std = _floored_std(image_scores)
        spread_threshold = float(map_maxima.mean() + sigmas * _floored_std(map_maxima))
        return cls(
            image_mean=float(image_scores.mean()),
            image_std=image_std,
            image_threshold=float(image_scores.mean() + sigmas * image_std),
            pixel_mean=pixel_mean,
            pixel_threshold=max(min(spread_threshold, pixel_max), pixel_mean + 1e-9),
            n_images=len(image_scores),
            rule=(
                f"image: mean + {sigmas:g} std of {len(image_scores)} held-out normal training images; "
                f"pixel: the same of their map maxima, at most the largest"
            ),
            pixel_max=pixel_max,
        )

    def calibrated_map(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Map in calibrated units: 0 at the normal mean, 1 at the pixel threshold."""
        return (anomaly_map - self.pixel_mean) / (self.pixel_threshold - self.pixel_mean)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floored_std(values: np.ndarray) -> float:
    return float(max(values.std(), 1e-6 * max(1.0, float(np.abs(values).mean()))))


@dataclass(frozen=True)
class AnomalyResult:
    """What a method says about one image.

    ``score`` and ``threshold`` are raw image-level values (higher = more anomalous); ``anomaly_map`` is the
    raw pixel map at the input image's resolution; ``calibration`` carries the normal statistics that
    explain both. ``frames`` show how the method got there; ``extras`` hold optional pictures such as
    the reconstruction (HxWx3 float in [0, 1]) keyed by name.
    """

    score: float
    anomaly_map: np.ndarray
    calibration: Calibration
    frames: tuple[Frame, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.calibration.image_threshold

    @property
    def is_anomalous(self) -> bool:
        return self.score > self.threshold

    @property
    def label(self) -> str:
        return "anomalous" if self.is_anomalous else "normal"

    @property
    def normalized_score(self) -> float:
        """Score in units of the normal spread: 0 = normal mean, 1 = threshold."""
        cal = self.calibration
        return (self.score - cal.image_mean) / max(cal.image_threshold - cal.image_mean, 1e-12)

    def calibrated_map(self) -> np.ndarray:
        return self.calibration.calibrated_map(self.anomaly_map)

    def mask(self, sensitivity: float = 1.0) -> np.ndarray:
        """Pixels above the calibrated pixel threshold divided by ``sensitivity`` (higher = more pixels)."""
        return self.calibrated_map() > 1.0 / sensitivity
