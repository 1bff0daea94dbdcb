"""ST-SSAD: Self-Tuning Self-Supervised Anomaly Detection (Yoo, Zhao, Akoglu; KDD 2025).

A detector learns to tell normal training images from augmented ones (binary cross-entropy); the
augmentation's continuous hyper-parameters are tuned at the same time, without labels, on an
unsupervised validation loss, alternating with detector updates (the paper back-propagates the loss
through a differentiable augmentation; here a compass search follows it, see "Tuning"). Images are
scored by the Mahalanobis distance of their pooled detector features to those of the normal training images.

Choices where the paper is unclear or where we depart (METHODS.md 2.5, 2.6):
* Detector: a stride-2 stem and one stride-2 ResNet basic block per width (32-64-128-256), global
  pooling, an MLP head (256 -> 256 -> 128) giving the embedding, then BN-ReLU-linear to one logit;
  128 px input, trained from scratch (the paper's ResNet-18 at 256 px is too slow for 2 CPU cores).
  SGD (lr 0.03, momentum 0.9, weight decay 3e-5, cosine decay) as in DSV; each step sees
  ``batch_size`` normals with colour jitter (brightness, contrast, saturation +-``jitter``; DSV's hue
  jitter is left out) and the same images augmented. ``epochs`` counts passes over the normals.
* CutDiff follows DSV's SmoothCutOut (bump exp(-||d||^2/0.2) subtracted, clipped to [0, 1]) but not its
  ranges: area log-linear in [0.001, 1] and aspect log-linear in [0.03, 1] (DSV: area linear in
  [0.02, 0.15], aspect in [0.3, 1]). Read through the earlier committed detectors, the validation loss was
  lowest at areas of about 0.01, below DSV's lower bound, and rose again towards zero area, where the
  augmentation vanishes; read as trained there (below), pill's loss fell up to an area of 0.35-0.5 and rose
  beyond (docs/st-ssad-tuning.md). The bump is averaged over each pixel (erf) so it vanishes continuously
  at zero area; height and width swap at random per image; the patch centre is uniform over the image.
  The two learnable strengths live in [0, 1] through a sigmoid.
* Rotation (``augmentation = "rotation"``, for semantic anomalies): angle = strength x 180 degrees,
  random sign per image, bilinear with reflected borders. CutDiff is the default (industrial defects).
* Validation loss: see ``validation.py`` (centre + scale all embeddings together, then a symmetric
  mean squared distance between the normal and augmented means and the validation set), computed on
  the embedding-head output with the detector in eval mode and frozen. The normals it compares with
  are the held-out training normals (unseen by the detector) and their augmented copies; with
  ``validation = "held_out"`` they are the validation data, and the training normals are compared.
* Tuning: see ``tuning.py``. The validation loss of a strength is read through the detector *trained
  there*: a functional copy of the detector at the end of its warm-up (``warmup_steps`` at
  ``initial_strength``, the middle of each range) trains ``candidate_steps`` more steps at that strength, on
  the same batches and augmentation randomness for every strength, and the loss is read on fixed images
  (``landscape_images``). From the warm-up's strengths, every ``tune_every`` detector steps one poll of a
  compass search (first step ``tune_step``) moves the strengths to a lower loss or halves its step (the
  paper's alternating updates; the paper follows the loss's gradient, from a start chosen by a
  score-variance heuristic). Read through the detector being trained instead, the loss is lowest wherever
  that detector has learnt least: the strengths were pushed away from wherever they were and slid into the
  bounds while the loss rose (the models of the previous rule). The trained-there loss on a
  ``coarse_points``-per-parameter grid of cell centres is stored in ``state["tuning"]["trained_there_grid"]``
  and the path is drawn on it in the frames (the same for every image: they show the training); the
  ``grid_points`` landscape of the final, frozen detector is stored in ``state["tuning"]["grid"]``.
* Validation data (``validation``): ``"test"`` = the dataset's test images without their labels
  (transductive, as in the paper; at most ``max_validation_images``, a seeded random subset);
  ``"held_out"`` = the held-out training normals (which also calibrate the threshold). Without test
  images, ``"test"`` falls back to ``"held_out"``; ``state["tuning"]["validation_data"]`` records what
  was used. ``"test"`` stays the default although it is transductive: held-out normals contain no
  anomaly for the augmentation to align with, and their landscape on the committed models is lowest
  at a bound (bottle: the lower corner; pill: the largest area).
* Score: Mahalanobis distance of globally pooled backbone features to those of the training normals,
  with a Ledoit-Wolf covariance (the CutPaste/DSV protocol, which pools the last stage). We pool the
  stages ``score_stages`` (default the last two, 128 + 256 channels), L2-normalise each and concatenate:
  with a pretext task this easy the last stage alone specialises in the augmentation, and the
  mid-level stage keeps more general evidence for small defects. The validation loss uses the
  embedding-head output.
* Pixel map (beyond the paper, which reports image AUROC only): Mahalanobis distance of each position
  of the stage maps ``map_stages`` (upsampled to the finest, concatenated) to the training normals'
  mean at that position under one shared Ledoit-Wolf covariance, upsampled and Gaussian-smoothed.

How the defaults were chosen, without test labels: the tuning rule, the ranges and the search's settings by
the validation loss itself (landscapes read through frozen and trained-there detectors, and whether the
loss fell along the search; ``tuning.py``, docs/st-ssad-tuning.md); the
scoring settings (``score_stages`` (2, 3) or (3,), 100 or 200 epochs) by ``python -m ssad select`` on
bottle, which ranks candidates by the AUROC of 31 set-aside training normals against forged copies of
them (0.998 against 0.994 to 0.996; ``leaderboard/selections/st-ssad_mvtec_bottle.json``). Pill and
OCT use the same defaults. (Before that re-derivation, four configurations had been evaluated on the
bottle test set; ``select`` re-ranked them without labels, on a criterion near saturation.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ssad.errors import SsadError
from ssad.methods.base import Inference, Method, MethodConfig, Progress, TrainingData
from ssad.methods.st_ssad.augment import CutDiff, LearnableAugmentation, Rotation
from ssad.methods.st_ssad.network import Detector
from ssad.methods.st_ssad.pictures import landscape_picture, loss_picture
from ssad.methods.st_ssad.scoring import fit_gaussian, mahalanobis
from ssad.methods.st_ssad.tuning import CompassSearch, evaluate_landscape, first_and_last_sixth
from ssad.methods.st_ssad.validation import mean_distance_loss
from ssad.nn.filters import gaussian_blur
from ssad.result import Frame, Panel

AUGMENTATIONS = ("cutdiff", "rotation")
VALIDATION_SOURCES = ("test", "held_out")


@dataclass
class STSSADConfig(MethodConfig):
    """ST-SSAD's settings; DSV's values are noted where ours differ."""

    size: int = 128  # DSV: 256
    epochs: int = 100  # passes over the normals; ~600 detector steps on MVTec bottle
    batch_size: int = 32  # normals per step, plus as many augmented (as in DSV)
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 3e-5
    jitter: float = 0.1
    gaussian_jitter_copies: int = 0  # colour-jittered copies of each training normal added to the Gaussians' samples
    widths: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 256
    embedding_dim: int = 128
    augmentation: str = "cutdiff"
    area_range: tuple[float, float] = (0.001, 1.0)  # DSV: 0.02-0.15, linear
    aspect_range: tuple[float, float] = (0.03, 1.0)  # DSV: 0.3-1
    max_rotation_degrees: float = 180.0
    initial_strength: float = 0.5  # every strength during the warm-up: the middle of each range
    warmup_steps: int = 40
    coarse_points: int = 4  # per parameter, for the start: strengths 0, 1/3, 2/3, 1
    candidate_steps: int = 6  # detector steps from the warm-up at each start point (same batches) before its loss is read
    grid_points: int = 7  # per parameter, for the landscape stored and drawn
    landscape_images: int = 64  # normals (augmented too) and validation images per landscape point
    tune_every: int = 20  # detector steps between two polls of the compass search
    tune_step: float = 0.25  # the search's first step in strength: a cell of the trained-there landscape
    validation: str = "test"
    max_validation_images: int = 200
    score_stages: tuple[int, ...] = (2, 3)
    map_stages: tuple[int, ...] = (1, 2)
    map_sigma: float = 4.0
    pixel_map: str = "feature-map Mahalanobis per position of detector stages (beyond the paper)"
    recorded_steps: int = 10
    thumbnail_size: int = 64
    precision: str = "fp32"  # see docs/methods.md, "Precision": bf16 trained worse detectors here, for 1.4x

    scoring_fields: ClassVar[tuple[str, ...]] = MethodConfig.scoring_fields + ("map_sigma", "pixel_map")
    # the score-variance initialisation, replaced by landscapes; the batch and Adam step of the frozen-detector gradient,
    # replaced by the compass search on fixed images
    retired_fields: ClassVar[tuple[str, ...]] = ("candidates", "validation_batch", "tune_lr")


class ScoringState(nn.Module):
    """Tensor state saved with the weights: Gaussians of embeddings and feature maps, tuning thumbnails."""

    def __init__(self, feature_dim: int, map_channels: int, map_shape: tuple[int, int], recorded: int, thumbnail: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_whitener", torch.eye(feature_dim))
        self.register_buffer("map_mean", torch.zeros(*map_shape, map_channels))
        self.register_buffer("map_whitener", torch.eye(map_channels))
        self.register_buffer("thumbnails", torch.zeros(recorded, 3, thumbnail, thumbnail))


class STSSAD(Method):
    """Self-tuning self-supervised anomaly detection with CutDiff or rotation."""

    id = "st-ssad"
    display_name = "ST-SSAD"
    config_class = STSSADConfig
    config: STSSADConfig

    def build_networks(self) -> nn.ModuleDict:
        cfg = self.config
        if cfg.augmentation not in AUGMENTATIONS:
            raise SsadError(f"ST-SSAD augmentation must be one of {AUGMENTATIONS}, not {cfg.augmentation!r}")
        if cfg.validation not in VALIDATION_SOURCES:
            raise SsadError(f"ST-SSAD validation must be one of {VALIDATION_SOURCES}, not {cfg.validation!r}")
        augmentation: LearnableAugmentation = (
            CutDiff(cfg.area_range, cfg.aspect_range) if cfg.augmentation == "cutdiff" else Rotation(cfg.max_rotation_degrees)
        )
        map_channels = sum(cfg.widths[i] for i in cfg.map_stages)
        scoring = ScoringState(
            sum(cfg.widths[i] for i in cfg.score_stages), map_channels, self._map_shape(), cfg.recorded_steps, cfg.thumbnail_size
        )
        detector = Detector(tuple(cfg.widths), cfg.hidden, cfg.embedding_dim).to(memory_format=torch.channels_last)
        return nn.ModuleDict({"detector": detector, "augmentation": augmentation, "scoring": scoring})

    def _map_shape(self) -> tuple[int, int]:
        stride = 2 ** (2 + min(self.config.map_stages))
        return -(-self.shape[0] // stride), -(-self.shape[1] // stride)  # stride-2 convolutions round up

    # ------------------------------------------------------------------ training

    def train_networks(self, data: TrainingData, progress: Progress) -> dict[str, Any]:
        cfg = self.config
        augmentation = self.networks["augmentation"]
        generator = torch.Generator().manual_seed(cfg.seed)
        train = data.train.to(self.device)
        validation = self._validation_images(data).to(self.device)
        steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
        readings = cfg.coarse_points ** len(augmentation.names) + steps // cfg.tune_every * 2 * len(augmentation.names)  # at most
        total = cfg.warmup_steps + steps
        counter = _Counter(progress, total + readings)
        reference = self._reference_normals(data).to(self.device)
        loss_images = self._loss_images(reference, validation)

        augmentation.set_strengths([cfg.initial_strength] * len(augmentation.names))
        optimizer = self._detector_optimizer()
        for step in range(cfg.warmup_steps):
            self._detector_step(train, optimizer, step, total, generator)
            counter.tick(f"warm-up at strength {cfg.initial_strength}")
        warm = _WarmStart.of(self.networks["detector"], optimizer)

        def trained_there() -> float:
            counter.tick(f"trained-there loss at {augmentation.physical()}")
            return self._trained_there_loss(warm, train, loss_images, total)

        landscape = evaluate_landscape(augmentation, trained_there, cfg.coarse_points, centred=True)
        search = CompassSearch(augmentation, trained_there, cfg.tune_step)
        search.remember(landscape)
        n_tune = steps // cfg.tune_every
        recorded_at = set(np.linspace(0, n_tune - 1, cfg.recorded_steps).round().astype(int).tolist()) if n_tune else set()
        recorded: list[dict[str, int]] = []
        bce_losses = []
        for step in range(steps):
            bce_losses.append(self._detector_step(train, optimizer, cfg.warmup_steps + step, total, generator))
            if (step + 1) % cfg.tune_every == 0 and len(search.steps) < n_tune:
                if len(search.steps) in recorded_at and len(recorded) < cfg.recorded_steps:
                    self._record_thumbnail(len(recorded), train[0])
                    recorded.append({"step": step + 1, "path": len(search.trajectory), "polls": len(search.steps)})
                search.poll()
            counter.tick(f"step {step + 1}/{steps} bce {np.mean(bce_losses[-20:]):.4f} {augmentation.physical()}")

        self._fit_gaussians(train)
        final = evaluate_landscape(augmentation, lambda: self._loss_through(self._embed, loss_images).item(), cfg.grid_points)
        loss_first, loss_last = first_and_last_sixth(search.losses) if search.losses else (float("nan"),) * 2
        self.state = {
            "tuning": {
                "augmentation": cfg.augmentation,
                "validation_data": self._validation_source(data),
                "reference_normals": "held_out" if self._validation_source(data) == "test" else "train",
                "params": augmentation.physical(),
                "strengths": search.strengths(),
                "bounds": augmentation.bounds(),
                "loss_first": round(loss_first, 5),
                "loss_last": round(loss_last, 5),
                "losses": [round(v, 5) for v in search.losses],
                "poll_steps": search.steps,
                "trajectory": search.trajectory,
                "trained_there_grid": landscape.to_state(augmentation.names, augmentation.physical_axes(landscape.axes)),
                "recorded": recorded,
                "grid": final.to_state(augmentation.names, augmentation.physical_axes(final.axes)),
            }
        }
        epoch_steps = math.ceil(len(train) / cfg.batch_size)
        return {
            "steps": steps,
            "epoch_bce": [round(float(np.mean(bce_losses[i : i + epoch_steps])), 5) for i in range(0, steps, epoch_steps)],
        }

    def training_note(self) -> str:
        """Which data tuned the augmentation, and to what: transductive tuning reads the unlabelled test images."""
        tuning = self.state.get("tuning")
        if not tuning:
            return ""
        source = "the unlabelled test images (transductive)" if tuning["validation_data"] == "test" else "held-out training normals"
        values = ", ".join(f"{unit.replace('_', ' ')} {value:.3g}" for unit, value in tuning["params"].items())
        return f"{tuning['augmentation']} tuned on {source}: {values}"

    def _validation_source(self, data: TrainingData) -> str:
        if self.config.validation == "test" and not data.dataset.test:
            return "held_out (no test images)"
        return self.config.validation

    def _validation_images(self, data: TrainingData) -> torch.Tensor:
        """Unlabelled validation images: test images (labels never read) or the held-out normals."""
        if self._validation_source(data) != "test":
            return data.held_out
        paths = [sample.path for sample in data.dataset.test]
        order = np.random.default_rng(self.config.seed).permutation(len(paths))[: self.config.max_validation_images]
        return self.load_images([paths[i] for i in sorted(order)])

    def _detector_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.SGD(
            self.networks["detector"].parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    def _detector_step(
        self, train: torch.Tensor, optimizer: torch.optim.Optimizer, step: int, total: int, generator: torch.Generator
    ) -> float:
        """One BCE step on a batch of jittered normals (label 0) and their augmented copies (label 1)."""
        self.networks["detector"].train()
        for group in optimizer.param_groups:
            group["lr"] = self._lr_at(step, total)
        with torch.no_grad():
            images, labels = self._pretext_batch(train, generator)
        loss = F.binary_cross_entropy_with_logits(self._detect(images)[1], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def _lr_at(self, step: int, total: int) -> float:
        """The detector's learning rate at a step: cosine decay from ``lr`` to 0 over ``total`` steps."""
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * step / total))

    def _pretext_batch(self, train: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Jittered normals (label 0) followed by the same images augmented (label 1)."""
        cfg = self.config
        normals = _colour_jitter(_batch(train, cfg.batch_size, generator), cfg.jitter, generator)
        images = torch.cat([normals, self.networks["augmentation"](normals, generator)])
        labels = torch.cat([torch.zeros(len(normals)), torch.ones(len(normals))]).to(self.device)
        return images, labels

    def _trained_there_loss(self, warm: _WarmStart, train: torch.Tensor, loss_images: tuple[torch.Tensor, torch.Tensor], total: int) -> float:
        """The validation loss at the current strengths, read through the warm-up detector trained ``candidate_steps`` more there.

        The steps (SGD with momentum and weight decay, as the detector's optimiser, on the same batches and
        augmentation randomness at every strength) train a functional copy, so the detector itself is untouched.
        """
        cfg = self.config
        detector = self.networks["detector"]
        params = dict(warm.params)
        buffers = {name: value.clone() for name, value in warm.buffers.items()}
        velocity = dict(warm.velocity)
        batches = torch.Generator().manual_seed(cfg.seed + 4)

        def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
            with self.autocast():
                return functional_call(detector, {**params, **buffers}, (images.contiguous(memory_format=torch.channels_last),))

        detector.train()
        for step in range(cfg.candidate_steps):
            with torch.no_grad():
                images, labels = self._pretext_batch(train, batches)
            params = {name: value.detach().requires_grad_() for name, value in params.items()}
            bce = F.binary_cross_entropy_with_logits(run(images)[1].float(), labels)
            grads = torch.autograd.grad(bce, list(params.values()))
            lr = self._lr_at(cfg.warmup_steps + step, total)
            with torch.no_grad():
                for (name, value), grad in zip(list(params.items()), grads):
                    velocity[name] = cfg.momentum * velocity[name] + grad + cfg.weight_decay * value
                    params[name] = value - lr * velocity[name]
        detector.eval()
        return self._loss_through(lambda images: run(images)[0].float(), loss_images).item()

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the frozen detector (eval mode), in chunks."""
        self.networks["detector"].eval()
        return torch.cat([self._detect(chunk)[0] for chunk in images.split(64)])

    def _reference_normals(self, data: TrainingData) -> torch.Tensor:
        """Normals the validation loss compares with: held-out ones (unseen by the detector) unless they are the validation data."""
        return data.held_out if self._validation_source(data) == "test" else data.train

    def _loss_images(self, reference: torch.Tensor, validation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed normals and validation images every reading of the validation loss compares (``landscape_images`` each)."""
        order = torch.Generator().manual_seed(self.config.seed + 2)
        return _batch(reference, self.config.landscape_images, order), _batch(validation, self.config.landscape_images, order)

    @torch.no_grad()
    def _loss_through(self, embed: Callable[[torch.Tensor], torch.Tensor], loss_images: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The validation loss at the current strengths through an embedding, with fixed augmentation randomness."""
        normals, validation = loss_images
        augmented = self.networks["augmentation"](normals, torch.Generator().manual_seed(self.config.seed + 3))
        return mean_distance_loss(embed(normals), embed(augmented), embed(validation))

    @torch.no_grad()
    def _record_thumbnail(self, index: int, example: torch.Tensor) -> None:
        """Keep a thumbnail of one training image augmented at the current strengths (same randomness every time)."""
        cfg = self.config
        augmented = self.networks["augmentation"](example[None], torch.Generator().manual_seed(cfg.seed + 1))
        self.networks["scoring"].thumbnails[index] = F.interpolate(augmented, size=cfg.thumbnail_size, mode="area")[0]

    @torch.no_grad()
    def _fit_gaussians(self, train: torch.Tensor) -> None:
        """Gaussians of the training normals: pooled features, and feature maps per position.

        With ``gaussian_jitter_copies``, colour-jittered copies of each normal, which the detector was trained to
        take as normal, join the samples: with the 8 normals of a Train-tab model they steady the covariance.
        """
        generator = torch.Generator().manual_seed(self.config.seed + 7)
        copies = [_colour_jitter(train, self.config.jitter, generator) for _ in range(self.config.gaussian_jitter_copies)]
        train = torch.cat([train, *copies])
        self.networks["detector"].eval()
        pooled, maps = [], []
        for chunk in train.split(32):
            stage_maps = self._detect(chunk)[2]
            pooled.append(self._pooled_features(stage_maps))
            maps.append(self._map_features(stage_maps))
        scoring = self.networks["scoring"]
        scoring.feature_mean[:], scoring.feature_whitener[:] = fit_gaussian(torch.cat(pooled))
        features = torch.cat(maps)  # [N, g, g, C]
        scoring.map_mean[:] = features.mean(dim=0)
        _, scoring.map_whitener[:] = fit_gaussian((features - scoring.map_mean).flatten(0, 2))

    def _detect(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The detector's embedding, logit and stage maps for a batch, run at the model's precision, returned in fp32."""
        with self.autocast():
            embedding, logit, stage_maps = self.networks["detector"](images.contiguous(memory_format=torch.channels_last))
        return embedding.float(), logit.float(), [stage.float() for stage in stage_maps]

    def _pooled_features(self, stage_maps: list[torch.Tensor]) -> torch.Tensor:
        """The scored representation: the ``score_stages`` maps, each averaged and L2-normalised, concatenated."""
        return torch.cat([F.normalize(stage_maps[i].mean(dim=(2, 3)), dim=1) for i in self.config.score_stages], dim=1)

    def _map_features(self, stage_maps: list[torch.Tensor]) -> torch.Tensor:
        """The chosen stage maps, upsampled to the finest of them and concatenated: [B, g, g, C]."""
        chosen = [F.interpolate(stage_maps[i], size=self._map_shape(), mode="bilinear", align_corners=False) for i in self.config.map_stages]
        return torch.cat(chosen, dim=1).permute(0, 2, 3, 1)

    # ------------------------------------------------------------------ inference

    def infer(self, image: torch.Tensor, with_frames: bool = True) -> Inference:
        cfg = self.config
        scoring = self.networks["scoring"]
        _, logit, stage_maps = self._detect(image[None])
        score = mahalanobis(self._pooled_features(stage_maps), scoring.feature_mean, scoring.feature_whitener)[0]
        features = self._map_features(stage_maps)[0]
        distances = mahalanobis(features - scoring.map_mean, torch.zeros_like(scoring.map_mean[0, 0]), scoring.map_whitener)
        anomaly_map = F.interpolate(distances[None, None], size=self.shape, mode="bilinear", align_corners=False)
        anomaly_map = gaussian_blur(anomaly_map, cfg.map_sigma)[0, 0]
        frames = (*self._tuning_frames(), _map_frame(image, anomaly_map)) if with_frames else ()
        return Inference(
            score=float(score),
            anomaly_map=anomaly_map,
            frames=frames,
            extras={
                "augmentation": cfg.augmentation,
                "tuned_parameters": self.state.get("tuning", {}).get("params"),
                "validation_data": self.state.get("tuning", {}).get("validation_data"),
                "anomaly_probability": float(torch.sigmoid(logit[0])),
            },
        )

    def _tuning_frames(self) -> list[Frame]:
        """The training's tuning, the same for every image: per recorded step the augmented example and the path so far
        on the landscape the search minimises (the loss as trained there); then the whole path beside the loss at each
        poll; then the trained detector's own landscape, which is lowest where it has learnt least."""
        tuning = self.state.get("tuning")
        if not tuning:
            return []
        thumbnails = self.networks["scoring"].thumbnails.float().clamp(0, 1)
        frames = []
        for index, entry in enumerate(tuning["recorded"]):
            strengths = tuning["trajectory"][entry["path"] - 1]
            values = ", ".join(f"{unit.split('_')[0]} {v:.2g}" for unit, v in self._physical_at(strengths).items())
            frames.append(
                Frame(
                    caption=f"Training step {entry['step']}: {values}",
                    panels=(
                        Panel(f"{tuning['augmentation']} at this step", thumbnails[index].permute(1, 2, 0).cpu().numpy(), "image"),
                        Panel("loss if trained there, dark=low", landscape_picture(tuning["trained_there_grid"], tuning["trajectory"][: entry["path"]]), "image"),
                    ),
                )
            )
        values = ", ".join(f"{unit.split('_')[0]} {v:.2g}" for unit, v in tuning["params"].items())
        frames.append(
            Frame(
                caption=f"Tuned: {values} (ring start, dot end)",
                panels=(
                    Panel("loss if trained there", landscape_picture(tuning["trained_there_grid"], tuning["trajectory"]), "image"),
                    Panel("validation loss at each poll", loss_picture(tuning["losses"]), "image"),
                ),
            )
        )
        frames.append(
            Frame(
                caption="The trained detector's own landscape (dot: tuned)",
                panels=(Panel("trained detector, dark=low", landscape_picture(tuning["grid"], tuning["trajectory"][-1:]), "image"),),
            )
        )
        return frames

    def _physical_at(self, strengths: list[float]) -> dict[str, float]:
        augmentation = self.networks["augmentation"]
        return dict(zip(augmentation.units, augmentation.to_physical(torch.tensor(strengths)).tolist()))


@dataclass(frozen=True)
class _WarmStart:
    """The detector's parameters, buffers and momentum at the end of the warm-up: where every trained-there reading starts."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    velocity: dict[str, torch.Tensor]

    @classmethod
    def of(cls, detector: nn.Module, optimizer: torch.optim.Optimizer) -> _WarmStart:
        params = {name: value.detach().clone() for name, value in detector.named_parameters()}
        velocity = {name: optimizer.state[value]["momentum_buffer"].detach().clone() for name, value in detector.named_parameters()}
        return cls(params, {name: value.detach().clone() for name, value in detector.named_buffers()}, velocity)


class _Counter:
    """Progress over warm-up and training steps together."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def tick(self, message: str) -> None:
        self.done += 1
        self.progress(self.done, self.total, message)


def _batch(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random batch (without replacement when there are enough images)."""
    indices = torch.randperm(len(images), generator=generator)[:size]
    return images[indices.to(images.device)]


def _colour_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength] per image."""
    if strength <= 0:
        return images
    factors = (1 + strength * (2 * torch.rand(3, images.shape[0], 1, 1, 1, generator=generator) - 1)).to(images)
    images = images * factors[0]
    grey = images.mean(dim=1, keepdim=True)
    images = grey.mean(dim=(2, 3), keepdim=True) + factors[1] * (images - grey.mean(dim=(2, 3), keepdim=True))
    grey = images.mean(dim=1, keepdim=True)
    return (grey + factors[2] * (images - grey)).clamp(0, 1)


def _map_frame(image: torch.Tensor, anomaly_map: torch.Tensor) -> Frame:
    return Frame(
        caption="This image: distance to normal features",
        panels=(Panel("input", image.permute(1, 2, 0).cpu().numpy(), "image"), Panel("anomaly map (beyond paper)", anomaly_map.cpu().numpy(), "heat")),
    )
