"""One image scored by one model, turned into what the page shows: pictures at display size, the verdict
in plain words, and the full-resolution heat map as a file to download."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ssad.data import fit_within, load_image, load_image_at_most
from ssad.errors import DataError
from ssad.result import AnomalyResult
from ssad.service.models import SessionModels, get_model
from ssad.viz import frames_to_gif, heat_overlay, render_frame

DISPLAY_MAX = 1024
"""Longest side, in pixels, of every picture sent to the page (the full-resolution map is a download)."""
WORKING_MAX = 2048
"""Longest side an upload is scored at. Every model's input is a few hundred pixels, so a phone photo is
reduced first (scoring it whole costs seconds for nothing); images up to this size, every dataset's
included, are scored exactly as the CLI scores them."""
MASK_LABEL = "anomalous pixels"
ANIMATION_PANEL = 144
"""Side of one panel in the animation GIF, in pixels (small keeps the GIF cheap to render and send)."""
HIDDEN_EXTRAS = ("anomaly_probability",)
"""Extras not shown as figures: ST-SSAD's 'augmented' probability is not the verdict and contradicts it."""


@dataclass(frozen=True)
class Detection:
    """One image scored by one model, with everything the page shows about it."""

    method: str
    model: str
    image: np.ndarray
    result: AnomalyResult
    seconds: float
    source: str
    detail: str
    config: dict[str, Any] = field(default_factory=dict)
    upload: Any = None
    """The image as uploaded, when it was reduced to :data:`WORKING_MAX` for scoring (the full-resolution map reloads it)."""

    @cached_property
    def picture(self) -> np.ndarray:
        """The image at display size."""
        return fit_within(self.image, DISPLAY_MAX)

    @cached_property
    def display_map(self) -> np.ndarray:
        """The calibrated map at display size, area-averaged before calibrating (both are linear; the raw map is
        the smaller array to work on)."""
        raw = self.result.anomaly_map.astype(np.float32, copy=False)
        height, width = self.picture.shape[:2]
        if raw.shape != (height, width):
            raw = np.asarray(Image.fromarray(raw, mode="F").resize((width, height), Image.BOX))
        return self.result.calibration.calibrated_map(raw)

    @property
    def summary(self) -> dict[str, Any]:
        """Score, threshold, label and timing as plain values (the Compare table, the API)."""
        return {
            "method": self.method,
            "score": round(self.result.score, 4),
            "threshold": round(self.result.threshold, 4),
            "label": self.result.label,
            "seconds": round(self.seconds, 3),
            "weights": f"{self.source} ({self.detail})",
        }


def detect(
    image: Any, method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None,
    with_frames: bool = True,
) -> Detection:
    """Score one image (path, bytes or array) with one model on this call's device; the wall time covers decoding and inference."""
    if image is None:
        raise DataError("no image: upload one or pick an example")
    method, source, detail = get_model(method_name, model, weights_dir, session)
    started = time.perf_counter()
    pixels = load_image_at_most(image, WORKING_MAX)
    result = method.predict(pixels, with_frames=with_frames)
    seconds = time.perf_counter() - started
    config = {"method": method.id, "config": dataclasses.asdict(method.config), "calibration": result.calibration.to_dict()}
    upload = image if max(pixels.shape[:2]) == WORKING_MAX else None  # possibly reduced: the download reloads it
    return Detection(method.display_name, model, pixels, result, seconds, source, detail, config, upload)


# ---------------------------------------------------------------------- words


def verdict_sentence(detection: Detection) -> str:
    """The verdict in plain words: the label and how far the score is from the normal threshold."""
    result = detection.result
    ratio = result.normalized_score
    if result.is_anomalous:
        return f"Anomalous: {ratio:.1f} x the normal threshold"
    if ratio <= 0:
        return "Normal: as calm as a typical normal image"
    return f"Normal: {100 * ratio:.0f}% of the way from a typical normal image to the threshold"


def calibration_sentence(detection: Detection) -> str:
    """What the threshold is, for a visitor."""
    n = detection.result.calibration.n_images
    return f"The threshold is set so that normal images rarely pass it, from {n} normal images the model never trained on."


def empty_mask_reason(detection: Detection, sensitivity: float = 1.0) -> str | None:
    """Why an anomalous image shows no pixel in its mask, or None when there is nothing to explain."""
    if not detection.result.is_anomalous or (detection.display_map > 1.0 / sensitivity).any():
        return None
    peak = float(detection.display_map.max())
    hint = (f"raise the sensitivity to {1 / peak:.2f} to see its strongest region" if peak >= 0.25
            else "no sensitivity on the slider reaches it")
    return (f"The image as a whole scores above its threshold, but no single pixel passes the pixel threshold: "
            f"the strongest reaches {peak:.2f} of it, so the evidence is spread out rather than in one spot ({hint}).")


def details_markdown(detection: Detection, device: str) -> str:
    """Wall time, device, where the weights came from, and the method's inner figures."""
    extras = ", ".join(
        f"{key.replace('_', ' ')} {value:.2f}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}"
        for key, value in detection.result.extras.items()
        if isinstance(value, (int, float)) and key not in HIDDEN_EXTRAS
    )
    return (
        f"**{detection.seconds:.2f} s** wall time on `{device}` (decoding + inference)  \n"
        f"**Weights:** {detection.source} — `{detection.detail}`"
        + (f"  \n**Inner workings:** {extras}" if extras else "")
    )


# ---------------------------------------------------------------------- pictures, at display size


def overlay(detection: Detection) -> np.ndarray:
    """The calibrated heat-map overlay with its colour bar, at display size."""
    return heat_overlay(detection.picture, detection.display_map)


def full_resolution_map(detection: Detection, folder: Path) -> str:
    """The heat-map overlay at the image's own resolution, as a PNG to download (quick to write, not small)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"heatmap-{detection.method}-{time.time_ns()}.png"
    image = detection.image if detection.upload is None else load_image(detection.upload)
    Image.fromarray(heat_overlay(image, detection.result.calibrated_map(), with_bar=False)).save(path, compress_level=1)
    return str(path)


def mask_annotation(detection: Detection, sensitivity: float = 1.0) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The image and its thresholded mask at display size, as ``gr.AnnotatedImage`` takes them; no network is run."""
    return detection.picture, [((detection.display_map > 1.0 / sensitivity).astype(np.float32), MASK_LABEL)]


def mask_share(detection: Detection, sensitivity: float = 1.0) -> float:
    """Fraction of the image's pixels in the mask."""
    return float((detection.display_map > 1.0 / sensitivity).mean())


def reconstruction_pair(detection: Detection) -> tuple[np.ndarray, np.ndarray] | None:
    """(input, reconstruction) at display size when the method reconstructs the image, else None."""
    reconstruction = detection.result.extras.get("reconstruction")
    if reconstruction is None:
        return None
    pixels = (np.clip(reconstruction, 0, 1) * 255).round().astype(np.uint8)
    height, width = detection.picture.shape[:2]
    return detection.picture, np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def animation(detection: Detection, folder: Path) -> Path | None:
    """The method's frames as an animated GIF in ``folder`` (None for a method without frames)."""
    if not detection.result.frames:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{detection.method}-{time.time_ns()}.gif"
    return frames_to_gif(detection.result.frames, detection.result.calibration, path, panel_size=ANIMATION_PANEL)


def frame_picture(detection: Detection, index: int) -> np.ndarray | None:
    """One frame of the animation, larger than in the GIF, for the frame slider."""
    frames = detection.result.frames
    if not frames:
        return None
    return render_frame(frames[min(max(int(index), 0), len(frames) - 1)], detection.result.calibration)
