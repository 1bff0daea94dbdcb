"""Bounded training of a small model in one browser session: the upload checks, the one recipe, the
progress across stages, and a self-check on held-out normals."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ssad.data import load_image, open_dataset
from ssad.data.datasets import IMAGE_SUFFIXES
from ssad.errors import DataError, SsadError
from ssad.methods import Method, MethodConfig, method_class
from ssad.methods.base import Progress, held_out_split
from ssad.recipes import SESSION_RECIPE, epochs_for_steps
from ssad.service.models import SessionModels, current_device


@dataclass(frozen=True)
class TrainingLimits:
    """Bounds that keep on-the-spot training from taking the server down, and what makes its model trustworthy."""

    min_images: int = 4
    max_images: int = 32
    max_pixels_per_image: int = 4_000_000
    max_upload_bytes: int = 50_000_000
    max_seconds: float = 180.0
    min_calibration_images: int = 8  # fewer held-out normals make the threshold unreliable (a warning says so)
    max_session_models: int = 3
    step_scale: float = field(default_factory=lambda: float(os.environ.get("SSAD_SESSION_STEP_SCALE", "1")))
    """Multiplies the recipe's target steps (tests of the wiring set ``SSAD_SESSION_STEP_SCALE`` small)."""


def session_sizes() -> str:
    """The recipe's input size of each method, for the page ("SSM 64 px, ST-SSAD 128 px, ...")."""
    from ssad.methods import METHODS

    return ", ".join(f"{cls.display_name} {SESSION_RECIPE[cls.id]['size']} px" for cls in METHODS.values())


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


def held_out_count(n_images: int, limits: TrainingLimits = TrainingLimits()) -> int:
    """Normals kept out of training to calibrate on: ``min_calibration_images``, but never more than half."""
    return max(1, min(n_images // 2, max(limits.min_calibration_images, round(0.25 * n_images))))


def training_config(method_name: str, n_images: int, limits: TrainingLimits = TrainingLimits()) -> MethodConfig:
    """The method's defaults with the session recipe, and as many epochs as give its target steps on ``n_images``."""
    cls = method_class(method_name)
    recipe = SESSION_RECIPE[cls.id]
    n_held_out = held_out_count(n_images, limits)
    fields = epochs_for_steps(recipe, n_images - n_held_out, recipe["batch_size"], limits.step_scale)
    return dataclasses.replace(cls.config_class(), **fields, held_out_fraction=n_held_out / n_images)


class StagedProgress:
    """One bar across a method's stages, each filling its share of the bar in turn; it never goes back.

    ``plan`` lists the stages in order as (message first words, planned size); messages of no stage
    (loading images) leave the bar where it is.
    """

    def __init__(self, plan: list[tuple[tuple[str, ...], int]], report: Progress):
        total = sum(size for _, size in plan)
        starts = np.cumsum([0, *(size / total for _, size in plan)])
        self.stages = {word: (starts[i], starts[i + 1] - starts[i]) for i, (words, _) in enumerate(plan) for word in words}
        self.report, self.fraction = report, 0.0

    def __call__(self, done: int, total: int, message: str) -> None:
        start, share = self.stages.get(message.split(" ", 1)[0], (0.0, 0.0))
        self.fraction = max(self.fraction, start + share * done / max(total, 1))
        self.report(round(1000 * self.fraction), 1000, message)


def stage_plan(config: MethodConfig) -> list[tuple[tuple[str, ...], int]]:
    """The stages named by the first word of a method's progress messages, with their planned epochs."""
    recon = getattr(config, "recon_epochs", None)
    if recon is not None:  # SGSF: the reconstruction network first, then the segmenter, each counted from 0
        return [(("reconstruction",), recon), (("segmentation",), config.epochs)]
    return [(("epoch", "warm-up", "step"), config.epochs)]  # one counter over the whole training


@dataclass(frozen=True)
class SelfCheck:
    """How the fresh model treats normals it never trained on, and forged defects on them."""

    n_normals: int
    normals_below_threshold: int
    forgery_auroc: float

    def describe(self) -> str:
        return (
            f"{self.normals_below_threshold} of {self.n_normals} held-out normal images score below the threshold; "
            f"forged defects on them are told apart from the originals with AUROC {self.forgery_auroc:.2f} "
            "(1 = always, 0.5 = chance)"
        )


def self_check(method: Method, dataset_folder: Path) -> SelfCheck:
    """Score the held-out normals ``Method.fit`` calibrated on and forged copies of them."""
    from ssad.selection import forge_copies, forgery_auroc

    _, held_out = held_out_split(open_dataset(dataset_folder), method.config)
    normals = method.load_images(held_out)
    threshold = method.calibration.image_threshold
    below = sum(method.predict((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), with_frames=False).score <= threshold for image in normals)
    return SelfCheck(len(normals), int(below), forgery_auroc(method, normals, forge_copies(normals, 1, method.config.seed)))


def train_session_model(
    method_name: str, name: str, uploads: list[str | Path], workdir: Path,
    limits: TrainingLimits = TrainingLimits(), progress: Progress | None = None,
) -> tuple[str, Method, SelfCheck]:
    """Train a small model on uploaded normal images within the limits, on this call's device.

    Returns (``custom/<name>``, model, self-check); stops with a clear error past ``limits.max_seconds``.
    """
    cls = method_class(method_name)
    folder = collect_training_images(uploads, workdir / _safe_name(name), limits)
    dataset = open_dataset(folder)
    config = training_config(method_name, len(dataset.train), limits)
    deadline = time.monotonic() + limits.max_seconds
    report = StagedProgress(stage_plan(config), progress or (lambda done, total, message: None))

    def bounded(done: int, total: int, message: str) -> None:
        if time.monotonic() > deadline:
            raise SsadError(f"training stopped: it ran past the limit of {limits.max_seconds:.0f} s; use fewer images")
        report(done, total, message)

    try:
        method = cls(config, current_device()).fit(dataset, bounded)
        check = self_check(method, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dataset.name, method, check


def calibration_warning(method: Method, limits: TrainingLimits = TrainingLimits()) -> str | None:
    """Why the model's threshold cannot be trusted, or None."""
    n = method.info.get("n_held_out", 0)
    if n >= limits.min_calibration_images:
        return None
    return (f"Only {n} held-out normal images calibrated this model (at least {limits.min_calibration_images} are "
            f"needed): its threshold is unreliable. Upload {2 * limits.min_calibration_images} or more images.")


def remember(session: SessionModels | None, model: str, method: Method, limits: TrainingLimits = TrainingLimits()) -> SessionModels:
    """A new session dict with the model added, dropping the oldest beyond ``limits.max_session_models``."""
    models = {key: value for key, value in (session or {}).items() if key != (method.id, model)}
    models[(method.id, model)] = method
    return dict(list(models.items())[-limits.max_session_models:])
