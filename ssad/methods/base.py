"""The contract every method follows: train from a dataset, save and load, predict one image.

A method subclasses :class:`Method`, declares its config dataclass, builds its networks and implements
``train_networks`` and ``infer`` at its own input size. Everything else (data loading, held-out
calibration, resizing maps back to the input, saving with a checksum, loading strictly) lives here once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ssad.data import AnomalyDataset, image_to_tensor, input_shape, load_image, median_aspect, resize_image
from ssad.errors import SsadError, WeightsError
from ssad.fingerprint import scoring_fingerprint, training_fingerprint
from ssad.precision import autocast, resolve_precision
from ssad.provenance import provenance
from ssad.result import AnomalyResult, Calibration, Frame

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

Progress = Callable[[int, int, str], None]
"""Called as ``progress(done, total, message)`` during training and evaluation."""


def no_progress(done: int, total: int, message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class MethodConfig:
    """Settings common to every method; each method extends it. Saved in ``config.json``."""

    size: int = 128  # the input has about size x size pixels, whatever its aspect
    input_shape: tuple[int, int] | None = None  # (height, width); None: from the training images' median aspect at fit
    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    held_out_fraction: float = 0.1
    threshold_sigmas: float = 3.0
    storage_dtype: str = "float16"
    precision: str = "auto"  # network passes: auto (bf16 where the hardware is fast at it), bf16 or fp32

    scoring_fields: ClassVar[tuple[str, ...]] = ("threshold_sigmas", "precision")
    """Fields that only score or calibrate: changing one means recalibrate, not retrain."""
    retired_fields: ClassVar[tuple[str, ...]] = ()
    """Scoring fields of earlier versions, ignored when a saved config is read (recalibrate such a model)."""

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> MethodConfig:
        """The config recorded in a ``config.json``, without retired fields; TypeError when it does not fit."""
        values = {name: value for name, value in values.items() if name not in cls.retired_fields}
        shape = values.get("input_shape") or (values.get("size", cls.size),) * 2  # saved before the field: square
        return cls(**{**values, "input_shape": tuple(shape)})

    def training_settings(self) -> dict[str, Any]:
        """The fields that shape the weights, as JSON values (what a retrain would have to reproduce)."""
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        return {name: value for name, value in values.items() if name not in self.scoring_fields}


@dataclass(frozen=True)
class Inference:
    """A method's raw answer at its own input size, before the base class maps it back to the image."""

    score: float
    anomaly_map: torch.Tensor
    frames: tuple[Frame, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingData:
    """What a method may learn from: normal training images, held-out normals, and the dataset itself.

    ``held_out`` images are never trained on; they calibrate scores. ``dataset`` gives methods that tune
    on unlabelled data (ST-SSAD) access to it; labels must not be read.
    """

    train: torch.Tensor
    held_out: torch.Tensor
    dataset: AnomalyDataset


class Method(ABC):
    """Base class of SSM, ST-SSAD and SGSF."""

    id: ClassVar[str]
    display_name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    input_multiple: ClassVar[int] = 16
    """What both sides of the input must be a multiple of (the networks' total stride)."""

    def __init__(self, config: MethodConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config if config is not None else self.config_class()
        self.device = torch.device(device)
        resolve_precision(self.config.precision, self.device)  # an unknown precision fails here, not mid-training
        self.networks: nn.ModuleDict = self.build_networks().to(self.device)
        self.state: dict[str, Any] = {}
        self.calibration: Calibration | None = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ what each method implements

    @abstractmethod
    def build_networks(self) -> nn.ModuleDict:
        """All trainable modules and tensor state (as buffers); saved to ``model.safetensors``."""

    @abstractmethod
    def train_networks(self, data: TrainingData, progress: Progress) -> dict[str, Any]:
        """Train on ``data``; return a small log (losses per epoch) that is saved with the weights."""

    @abstractmethod
    def infer(self, image: torch.Tensor, with_frames: bool = True) -> Inference:
        """Score one [3, H, W] image (``self.shape``) in [0, 1] on ``self.device``; called under inference mode."""

    @property
    def shape(self) -> tuple[int, int]:
        """The (height, width) every image is resized to before the networks see it."""
        return tuple(self.config.input_shape) if self.config.input_shape else (self.config.size, self.config.size)  # type: ignore[return-value]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for this model's network passes at its configured precision.

        Methods wrap only the network calls in it and cast their outputs back to fp32, so that losses,
        maps, statistics and pictures are always computed in fp32.
        """
        return autocast(self.config.precision, self.device)

    # ------------------------------------------------------------------ training and calibration

    def fit(self, dataset: AnomalyDataset, progress: Progress = no_progress) -> Method:
        """Train on the dataset's normal training images and calibrate on a held-out part of them.

        Without an ``input_shape`` in the config, the training images' median aspect sets it, so a set of
        205 x 512 scans is not squashed into a square; the networks are built afresh for it at the seed.
        """
        train_paths, held_out_paths = held_out_split(dataset, self.config)
        if self.config.input_shape is None:
            shape = dataset_input_shape(dataset, self.config.size, self.input_multiple)
            self.config = dataclasses.replace(self.config, input_shape=shape)
        torch.manual_seed(self.config.seed)
        self.networks = self.build_networks().to(self.device)
        images = self.load_images(held_out_paths + train_paths, progress)
        data = TrainingData(train=images[len(held_out_paths):], held_out=images[: len(held_out_paths)], dataset=dataset)
        started, cpu_started = time.perf_counter(), time.process_time()
        self.networks.train()
        log = self.train_networks(data, progress)
        self.networks.eval()
        self.info = {
            "model": dataset.name,
            "data": str(dataset.root),
            "n_train": len(data.train),
            "n_held_out": len(data.held_out),
            "training_images_sha256": training_images_sha256(dataset),
            "train_seconds": round(time.perf_counter() - started, 1),
            "train_cpu_seconds": round(time.process_time() - cpu_started, 1),  # the cost when other jobs share the cores
            "threads": torch.get_num_threads(),
            "train_precision": resolve_precision(self.config.precision, self.device),
            "log": log,
            **provenance(self.device),
            "fingerprints": {"training": training_fingerprint(type(self)), "scoring": scoring_fingerprint(type(self))},
        }
        self.calibrate(data.held_out)
        return self

    def recalibrate(self, dataset: AnomalyDataset, progress: Progress = no_progress) -> Calibration:
        """Recompute, from the held-out normals of training, everything estimated from them; weights stay as they are.

        Refused when the dataset's training images are not those the model was trained on, since its
        held-out split would then no longer be the one kept out of training.
        """
        changed = training_set_change(self.info, dataset)
        if changed:
            raise SsadError(f"{dataset.root}: {changed}; retrain it")
        _, held_out_paths = held_out_split(dataset, self.config)
        started = time.perf_counter()
        calibration = self.calibrate(self.load_images(held_out_paths, progress))
        fingerprints = self.info.setdefault("fingerprints", {})
        fingerprints["scoring"] = scoring_fingerprint(type(self))
        self.info["calibrated"] = {**provenance(self.device), "seconds": round(time.perf_counter() - started, 1)}
        return calibration

    def with_scoring_settings(self, **changes: Any) -> Method:
        """A copy sharing this model's networks, with other scoring settings (recalibrate it before use)."""
        unknown = set(changes) - set(self.config.scoring_fields)
        if unknown:
            raise SsadError(f"not scoring settings of {self.display_name}: {', '.join(sorted(unknown))}")
        other = copy.copy(self)
        other.state, other.info = copy.deepcopy(self.state), copy.deepcopy(self.info)
        other.adopt_scoring_settings(dataclasses.replace(self.config, **changes))
        return other

    def ablations(self) -> dict[str, Method]:
        """Variants without one of the method's mechanisms, evaluated beside it (see ``ssad.evaluation``)."""
        return {}

    def adopt_scoring_settings(self, config: MethodConfig) -> None:
        """Take the scoring-only fields of ``config`` (the rest must match the weights); recalibrate afterwards."""
        scoring = {name: getattr(config, name) for name in self.config.scoring_fields}
        self.config = dataclasses.replace(self.config, **scoring)
        resolve_precision(self.config.precision, self.device)
        self.on_loaded()

    def load_images(self, paths: list[Path], progress: Progress = no_progress) -> torch.Tensor:
        """Decode and resize images to the method's input shape as one [N, 3, H, W] tensor."""
        tensors = []
        for done, path in enumerate(paths, 1):
            tensors.append(image_to_tensor(resize_image(load_image(path), self.shape)))
            progress(done, len(paths), "loading images")
        return torch.stack(tensors)

    def fit_scoring(self, normal_images: torch.Tensor) -> None:
        """Hook: estimate a method's own score statistics from held-out normals, before the calibration."""

    @torch.inference_mode()
    def calibrate(self, normal_images: torch.Tensor) -> Calibration:
        """Store the score statistics of normal images that were not trained on."""
        self.networks.eval()
        self.fit_scoring(normal_images)
        inferences = [self.infer(image.to(self.device), with_frames=False) for image in normal_images]
        scores = np.array([inference.score for inference in inferences])
        maps = torch.stack([inference.anomaly_map for inference in inferences]).float().cpu().numpy()
        self.calibration = Calibration.from_normal_scores(scores, maps, self.config.threshold_sigmas)
        return self.calibration

    # ------------------------------------------------------------------ prediction

    @torch.inference_mode()
    def predict(self, image: np.ndarray | str | Path | bytes, with_frames: bool = True) -> AnomalyResult:
        """Score one image of any size; the map comes back at the image's own resolution."""
        if self.calibration is None:
            raise SsadError(f"{self.display_name} model is not trained or loaded")
        pixels = load_image(image)
        tensor = image_to_tensor(resize_image(pixels, self.shape)).to(self.device)
        self.networks.eval()
        inference = self.infer(tensor, with_frames=with_frames)
        anomaly_map = F.interpolate(
            inference.anomaly_map.float()[None, None], size=pixels.shape[:2], mode="bilinear", align_corners=False
        )[0, 0]
        return AnomalyResult(
            score=float(inference.score),
            anomaly_map=anomaly_map.cpu().numpy(),
            calibration=self.calibration,
            frames=inference.frames,
            extras=inference.extras,
        )

    # ------------------------------------------------------------------ saving and loading

    def describe(self) -> dict[str, Any]:
        """Everything ``config.json`` records, except the checksum."""
        return {
            "format_version": FORMAT_VERSION,
            "method": self.id,
            "config": dataclasses.asdict(self.config),
            "state": self.state,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "info": self.info,
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dtype = getattr(torch, self.config.storage_dtype)
        tensors = {
            name: (t.to(dtype) if t.is_floating_point() else t).contiguous().cpu()
            for name, t in self.networks.state_dict().items()
        }
        save_file(tensors, folder / WEIGHTS_FILE, metadata={"method": self.id, "format": str(FORMAT_VERSION)})
        return self.save_config(folder)

    def save_config(self, folder: str | Path) -> Path:
        """Write ``config.json`` beside an existing weights file (after a recalibration), with that file's sha256."""
        folder = Path(folder)
        description = {**self.describe(), "weights_sha256": sha256_of(folder / WEIGHTS_FILE)}
        (folder / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Method:
        """Load weights saved by :meth:`save`: checksum verified, every key must match, safetensors only."""
        folder = Path(folder)
        description = read_config(folder)
        if description.get("method") != cls.id:
            raise WeightsError(f"{folder / CONFIG_FILE}: weights are for {description.get('method')!r}, not {cls.id!r}")
        weights_path = folder / WEIGHTS_FILE
        if not weights_path.is_file():
            raise WeightsError(f"{weights_path}: weights file is missing")
        expected = description.get("weights_sha256")
        if expected != sha256_of(weights_path):
            raise WeightsError(f"{weights_path}: sha256 does not match config.json (corrupt or replaced file)")
        try:
            config = cls.config_class.from_saved(description["config"])
        except TypeError as error:
            raise WeightsError(f"{folder / CONFIG_FILE}: config does not fit {cls.display_name}: {error}") from None
        method = cls(config, device)
        try:
            tensors = load_file(weights_path)
        except Exception as error:  # safetensors raises its own error types for malformed headers
            raise WeightsError(f"{weights_path}: not a readable safetensors file ({error})") from None
        reference = method.networks.state_dict()
        tensors = {name: t.to(reference[name].dtype) if name in reference else t for name, t in tensors.items()}
        try:
            method.networks.load_state_dict(tensors, strict=True)
        except RuntimeError as error:
            first_line = str(error).splitlines()[0] if str(error) else "key mismatch"
            raise WeightsError(f"{weights_path}: weights do not match the {cls.display_name} network: {first_line}") from None
        method.networks.eval()
        method.state = description.get("state") or {}
        method.calibration = Calibration(**description["calibration"]) if description.get("calibration") else None
        method.info = description.get("info") or {}
        method.on_loaded()
        return method

    def on_loaded(self) -> None:
        """Hook for a method to rebuild derived state after loading (cached masks, for example)."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(folder: Path) -> dict[str, Any]:
    """Parse ``config.json`` of a weights folder, with a clear error when it is missing or malformed."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: no config.json in the weights folder")
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(description, dict) or "method" not in description or "config" not in description:
        raise WeightsError(f"{path}: not an ssad config (no 'method' and 'config')")
    return description


def held_out_split(dataset: AnomalyDataset, config: MethodConfig) -> tuple[list[Path], list[Path]]:
    """(training, held-out) image paths: a seeded share of the normals is kept out of training to calibrate."""
    samples = list(dataset.train)
    if len(samples) < 2:
        raise SsadError(f"{dataset.root}: at least 2 normal training images are needed, found {len(samples)}")
    order = np.random.default_rng(config.seed).permutation(len(samples))
    n_held_out = min(len(samples) - 1, max(1, round(config.held_out_fraction * len(samples))))
    paths = [samples[i].path for i in order]
    return paths[n_held_out:], paths[:n_held_out]


def dataset_input_shape(dataset: AnomalyDataset, size: int, multiple: int) -> tuple[int, int]:
    """The input (height, width) for a dataset: about ``size`` x ``size`` pixels at its training images' median aspect."""
    return input_shape(median_aspect([sample.path for sample in dataset.train]), size, multiple)


def training_set_change(info: dict[str, Any], dataset: AnomalyDataset) -> str | None:
    """How the dataset's training images differ from those recorded in a model's ``info``, or None.

    Models trained before the images' sha256 was recorded are compared by the number of images.
    """
    recorded = info.get("training_images_sha256")
    if recorded is not None:
        return None if recorded == training_images_sha256(dataset) else "the training images changed"
    n_recorded = info.get("n_train", 0) + info.get("n_held_out", 0)
    if n_recorded != len(dataset.train):
        return f"the training set changed ({n_recorded} images then, {len(dataset.train)} now)"
    return None


def training_images_sha256(dataset: AnomalyDataset) -> str:
    """sha256 over the names and bytes of the dataset's normal training images, so a changed training set is seen."""
    digest = hashlib.sha256()
    for sample in dataset.train:
        digest.update(f"{sample.path.relative_to(dataset.root)}\0".encode())
        digest.update(sha256_of(sample.path).encode())
    return digest.hexdigest()
