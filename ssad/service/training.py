"""What the app does, without the web page: which models exist, one detection turned into pictures,
and bounded training of a model for one browser session.

The app (``app.py``) only wires these functions to Gradio components; everything here is plain Python
and works for every method in the registry, so a newly registered method appears without app changes.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssad.data import load_image, open_dataset
from ssad.data.datasets import IMAGE_SUFFIXES
from ssad.errors import DataError, SsadError, WeightsError
from ssad.hub import HUB_REPO, HUB_REVISION, embedded_models, load_model, resolve_weights
from ssad.leaderboard import CATEGORIES
from ssad.methods import METHODS, Method, method_class
from ssad.methods.base import Progress
from ssad.result import AnomalyResult
from ssad.viz import frames_to_gif, render_frame, result_overlay

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
"""Where inference and session training run: the GPU when there is one."""

USUAL_MODELS = tuple(f"mvtec/{category}" for category in CATEGORIES["mvtec"]) + ("oct/retina",)
"""Models offered even when no weights are embedded: they may come from the Hub."""

MASK_LABEL = "anomalous pixels"
ANIMATION_PANEL = 144
"""Side of one panel in the animation GIF, in pixels (small keeps the GIF cheap to render and send)."""

SessionModels = dict[tuple[str, str], Method]
"""Models trained in one browser session, by (method id, dataset/category)."""


def display_names() -> list[str]:
    """Display names of every registered method (SSM, ST-SSAD, SGSF), in registry order."""
    return [cls.display_name for cls in METHODS.values()]


def model_choices(weights_dir: Path | None = None, session: SessionModels | None = None) -> list[str]:
    """Models to offer: this session's own, then the embedded ones, then the usual categories."""
    own = [model for _, model in (session or {})]
    embedded = [model for _, model in embedded_models(weights_dir)]
    return list(dict.fromkeys([*own, *embedded, *USUAL_MODELS]))


def default_model(weights_dir: Path | None = None) -> str:
    """The first embedded model (``mvtec/bottle`` when there is one), else ``mvtec/bottle``."""
    embedded = [model for _, model in embedded_models(weights_dir)]
    return "mvtec/bottle" if "mvtec/bottle" in embedded or not embedded else embedded[0]


def default_method(model: str, weights_dir: Path | None = None) -> str:
    """The first registered method with weights for ``model`` (the first method when none has)."""
    names = display_names()
    return next((name for name in names if availability(name, model, weights_dir).available), names[0])


def hub_offline() -> bool:
    """Whether huggingface_hub was started offline (``HF_HUB_OFFLINE=1``, read at its import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@dataclass(frozen=True)
class Availability:
    """Whether a method has weights for a model, where they are, or why not."""

    method: str
    model: str
    source: str | None
    detail: str

    @property
    def available(self) -> bool:
        return self.source is not None

    def describe(self) -> str:
        """One line for the page: ``embedded (weights/ssm/mvtec/bottle)`` or the reason it is missing."""
        return f"{self.source} ({self.detail})" if self.available else f"unavailable: {self.detail}"


def availability(
    method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None
) -> Availability:
    """Where a model's weights come from, or why they cannot be used; never downloads anything."""
    cls = method_class(method_name)
    if (cls.id, model) in (session or {}):
        return Availability(cls.display_name, model, "trained in this session", "kept in your browser session only")
    try:
        resolved = resolve_weights(cls.id, model, weights_dir=weights_dir, allow_download=False)
    except WeightsError as error:
        reason = str(error) if hub_offline() else f"{error}; it will be fetched from {HUB_REPO}@{HUB_REVISION} on first use"
        return Availability(cls.display_name, model, None, reason)
    try:  # weights found here are loaded (once, shared): a corrupt or mismatched file shows as unavailable
        load_model(cls.id, model, DEVICE, weights_dir)
    except WeightsError as error:
        return Availability(cls.display_name, model, None, str(error))
    return Availability(cls.display_name, model, resolved.source, resolved.detail)


def availability_table(weights_dir: Path | None = None) -> list[dict[str, str]]:
    """Every registered method for every offered model: where its weights come from, or why they are missing."""
    return [
        {"method": where.method, "model": where.model, "weights": where.describe()}
        for model in model_choices(weights_dir)
        for where in (availability(name, model, weights_dir) for name in display_names())
    ]


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


def get_model(
    method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None
) -> tuple[Method, str, str]:
    """The loaded model with where it came from: this session's own, or resolved by ``ssad.hub``."""
    cls = method_class(method_name)
    if (cls.id, model) in (session or {}):
        return session[(cls.id, model)], "trained in this session", "kept in your browser session only"
    method, resolved = load_model(cls.id, model, DEVICE, weights_dir)
    return method, resolved.source, resolved.detail


def detect(
    image: Any, method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None,
    with_frames: bool = True,
) -> Detection:
    """Score one image (path, bytes or array) with one model; the wall time covers decoding and inference."""
    if image is None:
        raise DataError("no image: upload one or pick an example")
    method, source, detail = get_model(method_name, model, weights_dir, session)
    started = time.perf_counter()
    pixels = load_image(image)
    result = method.predict(pixels, with_frames=with_frames)
    seconds = time.perf_counter() - started
    config = {"method": method.id, "config": dataclasses.asdict(method.config), "calibration": result.calibration.to_dict()}
    return Detection(method.display_name, model, pixels, result, seconds, source, detail, config)


# ---------------------------------------------------------------------- pictures of a detection


def overlay(detection: Detection) -> np.ndarray:
    """The calibrated heat-map overlay with its colour bar."""
    return result_overlay(detection.image, detection.result)


def mask_annotation(detection: Detection, sensitivity: float = 1.0) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """The image and its thresholded mask, as ``gr.AnnotatedImage`` takes them; no network is run."""
    mask = detection.result.mask(sensitivity).astype(np.float32)
    return detection.image, [(mask, MASK_LABEL)]


def mask_share(detection: Detection, sensitivity: float = 1.0) -> float:
    """Fraction of the image's pixels in the mask."""
    return float(detection.result.mask(sensitivity).mean())


def reconstruction_pair(detection: Detection) -> tuple[np.ndarray, np.ndarray] | None:
    """(input, reconstruction at the input's size) when the method reconstructs the image, else None."""
    reconstruction = detection.result.extras.get("reconstruction")
    if reconstruction is None:
        return None
    pixels = (np.clip(reconstruction, 0, 1) * 255).round().astype(np.uint8)
    height, width = detection.image.shape[:2]
    resized = np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))
    return detection.image, resized


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


# ---------------------------------------------------------------------- training a session model


@dataclass(frozen=True)
class TrainingLimits:
    """Bounds that keep on-the-spot training from taking the server down."""

    min_images: int = 4
    max_images: int = 32
    max_pixels_per_image: int = 4_000_000
    max_upload_bytes: int = 50_000_000
    max_seconds: float = 180.0
    size: int = 64
    target_steps: int = 48  # optimiser steps aimed at, whatever the number of images
    min_epochs: int = 4
    max_epochs: int = 24
    batch_size: int = 4
    held_out_fraction: float = 0.25
    max_session_models: int = 3


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.strip().lower()).strip("-_")
    if not cleaned:
        raise DataError("give the model a name made of letters, digits, '-' or '_'")
    return cleaned[:40]


def collect_training_images(uploads: list[str | Path], folder: Path, limits: TrainingLimits = TrainingLimits()) -> Path:
    """Copy uploaded images (and the images inside uploaded zips) into ``folder``, each checked to decode.

    Zip members are read by their base name only (no paths from the archive reach the disk) and only
    up to the image and byte limits.
    """
    folder.mkdir(parents=True, exist_ok=True)
    budget = limits.max_upload_bytes
    count = 0

    def add(name: str, data: bytes) -> None:
        nonlocal budget, count
        if count >= limits.max_images:
            raise DataError(f"too many images: at most {limits.max_images} for on-the-spot training")
        budget -= len(data)
        if budget < 0:
            raise DataError(f"the upload is larger than {limits.max_upload_bytes // 1_000_000} MB")
        try:
            pixels = load_image(data, max_pixels=limits.max_pixels_per_image)
        except DataError as error:
            raise DataError(f"{name}: {str(error).removeprefix('image: ')}") from None
        Image.fromarray(pixels).save(folder / f"{count:03d}-{_safe_name(Path(name).stem)}.png")
        count += 1

    for upload in uploads or []:
        path = Path(upload)
        if path.suffix.lower() == ".zip":
            try:
                archive = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise DataError(f"{path.name}: not a readable zip file") from None
            with archive:
                for member in archive.infolist():
                    if member.is_dir() or Path(member.filename).name.startswith(".") or Path(member.filename).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if member.file_size > budget:
                        raise DataError(f"the upload is larger than {limits.max_upload_bytes // 1_000_000} MB")
                    add(Path(member.filename).name, archive.read(member))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            add(path.name, path.read_bytes())
        else:
            raise DataError(f"{path.name}: upload images ({', '.join(sorted(IMAGE_SUFFIXES))}) or a zip of them")
    if count < limits.min_images:
        raise DataError(f"{count} image(s) given: at least {limits.min_images} normal images are needed to train")
    return folder


def training_config(method_name: str, n_images: int, limits: TrainingLimits = TrainingLimits()):
    """The method's own defaults with the small input size and batch of on-the-spot training, and as many
    epochs (within bounds) as give about ``limits.target_steps`` optimiser steps on ``n_images`` images."""
    cls = method_class(method_name)
    n_train = n_images - max(1, round(limits.held_out_fraction * n_images))
    steps_per_epoch = max(1, -(-n_train // limits.batch_size))
    epochs = min(max(-(-limits.target_steps // steps_per_epoch), limits.min_epochs), limits.max_epochs)
    return dataclasses.replace(
        cls.config_class(), size=limits.size, epochs=epochs, batch_size=limits.batch_size,
        held_out_fraction=limits.held_out_fraction,
    )


def train_session_model(
    method_name: str, name: str, uploads: list[str | Path], workdir: Path,
    limits: TrainingLimits = TrainingLimits(), progress: Progress | None = None,
) -> tuple[str, Method]:
    """Train a small model on uploaded normal images within the limits; returns (``custom/<name>``, model).

    Training stops with a clear error when it runs past ``limits.max_seconds``.
    """
    cls = method_class(method_name)
    folder = collect_training_images(uploads, workdir / _safe_name(name), limits)
    dataset = open_dataset(folder)
    deadline = time.monotonic() + limits.max_seconds

    def bounded(done: int, total: int, message: str) -> None:
        if time.monotonic() > deadline:
            raise SsadError(f"training stopped: it ran past the limit of {limits.max_seconds:.0f} s; use fewer images")
        if progress is not None:
            progress(done, total, message)

    method = cls(training_config(method_name, len(dataset.train), limits), DEVICE).fit(dataset, bounded)
    shutil.rmtree(folder, ignore_errors=True)
    return dataset.name, method


def remember(session: SessionModels | None, model: str, method: Method, limits: TrainingLimits = TrainingLimits()) -> SessionModels:
    """A new session dict with the model added, dropping the oldest beyond ``limits.max_session_models``."""
    models = {key: value for key, value in (session or {}).items() if key != (method.id, model)}
    models[(method.id, model)] = method
    return dict(list(models.items())[-limits.max_session_models:])

