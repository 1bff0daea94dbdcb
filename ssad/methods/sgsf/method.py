"""SGSF: Self-Supervised Guided Segmentation Framework (Xing, Sun, Li, arXiv 2209.12440; journal NIGSF, TCSVT 2024).

Anomalies are forged on normal training images with saliency-guided Perlin masks; a segmentation U-Net
learns to find them, guided by the multi-scale features that a reconstruction network extracts from the
most similar normal training image (the contrast set). The pixel map is the segmentation output; the
image score is the maximum of the mean-filtered map.

Choices where the paper is unclear or out of reach here (no pretrained weights, 2 CPU cores):
* Saliency: CPD needs pretrained weights; we average spectral residual (Hou & Zhang) and colour contrast
  to the median border colour, each normalised to [0, 1] (``saliency="uniform"`` for textures). The
  salient region is the saliency above its Otsu threshold.
* Adaptive threshold: Perlin noise (2^u x 2^v cells, u, v in 0..4 at 128 px, DRAEM's scales halved)
  scaled to [0, 1], times the saliency, cut at mean + k std of the product inside the salient region,
  k ~ U(``mask_sigma_range``); the mask is also clipped to the region. Masks under ``min_mask_pixels``
  are redrawn. Beyond the paper, a share ``stroke_fraction`` of the masks are thin curved strokes (cracks,
  scratches, cuts), which no Perlin threshold gives.
* Anomaly source: no DTD; procedural textures (fractal Perlin colour noise, stripes, checkerboards) and
  rotated/zoomed/shifted/flipped patches of other training images, each recoloured by one or two of
  invert, solarise, posterise, gamma, brightness/contrast, channel shuffle. Opacity ~ U(0.2, 1.0) (DRAEM's
  code: 1 - beta, beta in [0, 0.8]). 3 forged : 1 normal as in the journal version. On a grey image the
  fill is made grey (the mean of its channels), so that colour alone never marks a forgery on grey data.
* Contrast set: cosine similarity of 16 px mean-centred thumbnails (the paper's feature is unspecified);
  n = 4 (the ablation's value; implementation details say 5). Training samples the guidance uniformly
  from the contrast set, excluding the training image itself; inference uses the most similar image.
* Guidance bank: the contrast set is drawn from ``guidance_bank_size`` training normals chosen by
  farthest-point sampling of those thumbnails and stored with the weights (uint8), so that one uploaded
  image is processed offline and the file stays small; the paper searches the whole training set.
* Networks: DRAEM-like but small for a CPU: widths 16-32-64-64, every level strided (level l at
  1/2^(l+1) of the 128 px input); the reconstruction net has no skips (DRAEM's reconstructive structure);
  its decoder feature at each level is concatenated with the segmenter's encoder feature of the same
  scale and fused by a 1x1 conv-BN-ReLU (cheaper than 3x3 on a CPU). The finest logits (64 px) are
  upsampled bilinearly to 128 px.
* Training: the loss is lambda (L2 + SSIM) + focal (gamma 2), lambda = 1, but the guidance features are
  detached, so the two terms train separate networks; we minimise them in two stages (reconstruction
  first, then segmentation against the frozen extractor, whose bank features are computed once), which
  halves the CPU cost per step. Adam; lr 1e-3 (paper 1e-4 with far more iterations), x0.1 at the
  ``lr_milestones`` fractions of each stage.
* Deep supervision (not in the paper): every coarser decoder level has a 1x1 head trained with the same
  focal loss against the area-downsampled mask, weight ``side_weight``; these maps are the demo's frames.
* The logit heads start at probability ``head_prior`` (RetinaNet's initialisation for focal loss), so the
  short CPU schedule does not spend its first steps pulling every pixel away from 0.5.
* Image score: max of the map after a ``score_filter`` px mean filter (DRAEM: 21 px at 256 px).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssad.data import AnomalyDataset, image_to_tensor, load_image, open_dataset, resize_image
from ssad.errors import DataError
from ssad.methods.base import Inference, Method, Progress, TrainingData, dataset_input_shape
from ssad.methods.sgsf.config import SGSFConfig
from ssad.methods.sgsf.forge import forge_batch, forge_images
from ssad.methods.sgsf.guidance import GuidanceBank, farthest_point_order, retrieval_features
from ssad.methods.sgsf.network import GuidedSegmentationNet, ReconstructionNet
from ssad.methods.sgsf.saliency import salient_regions, saliency_maps
from ssad.nn.filters import box_filter
from ssad.nn.losses import focal_loss, ssim
from ssad.result import Frame, Panel


class SGSF(Method):
    """Saliency-guided forged anomalies, normal-image guidance, segmentation."""

    id = "sgsf"
    display_name = "SGSF"
    config_class = SGSFConfig
    config: SGSFConfig

    def build_networks(self) -> nn.ModuleDict:
        cfg = self.config
        return nn.ModuleDict(
            {
                "reconstruction": ReconstructionNet(tuple(cfg.widths)),
                "segmentation": GuidedSegmentationNet(tuple(cfg.widths), cfg.head_prior),
                "bank": GuidanceBank(cfg.guidance_bank_size, self.shape, cfg.retrieval_size),
            }
        ).to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ training

    def train_networks(self, data: TrainingData, progress: Progress) -> dict[str, Any]:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        train = data.train
        bank_sources = farthest_point_order(retrieval_features(train, cfg.retrieval_size), cfg.guidance_bank_size)
        self.networks["bank"].fill(train[bank_sources])
        recon_losses = self._train_reconstruction(train, generator, progress)
        seg_losses = self._train_segmentation(train, bank_sources, generator, progress)
        return {"reconstruction_epoch_loss": recon_losses, "segmentation_epoch_loss": seg_losses}

    def _train_stage(
        self,
        module: nn.Module,
        epochs: int,
        n_images: int,
        batch_loss: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator,
        progress: Progress,
        stage: str,
    ) -> list[float]:
        """Adam over ``epochs`` shuffled passes, lr x0.1 at the milestones; ``batch_loss(indices)`` gives each batch's loss."""
        cfg = self.config
        steps = math.ceil(n_images / cfg.batch_size)
        optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[round(f * epochs * steps) for f in cfg.lr_milestones], gamma=0.1
        )
        losses = []
        for epoch in range(epochs):
            running = 0.0
            for step, indices in enumerate(torch.randperm(n_images, generator=generator).split(cfg.batch_size)):
                loss = batch_loss(indices)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.item()
                progress(epoch * steps + step + 1, epochs * steps, f"{stage} {epoch + 1}/{epochs} loss {running / (step + 1):.4f}")
            losses.append(round(running / steps, 5))
        return losses

    def _train_reconstruction(self, train: torch.Tensor, generator: torch.Generator, progress: Progress) -> list[float]:
        """Stage 1: the normal feature extractor learns to reconstruct normal images (L2 + SSIM)."""
        cfg = self.config
        network = self.networks["reconstruction"]

        def batch_loss(indices: torch.Tensor) -> torch.Tensor:
            images = train[indices].to(self.device)
            reconstruction, _ = self._reconstruct(images)
            return F.mse_loss(reconstruction, images) + cfg.ssim_weight * (1 - ssim(reconstruction, images))

        return self._train_stage(network, cfg.recon_epochs, len(train), batch_loss, generator, progress, "reconstruction")

    def _train_segmentation(
        self, train: torch.Tensor, bank_sources: torch.Tensor, generator: torch.Generator, progress: Progress
    ) -> list[float]:
        """Stage 2: segment forged anomalies, guided by a contrast-set image's frozen reconstruction features."""
        cfg = self.config
        network = self.networks["segmentation"]
        bank: GuidanceBank = self.networks["bank"]
        self.networks["reconstruction"].eval()
        with torch.no_grad():
            bank_guidance = self._guidance(bank.pixels().to(self.device))
        saliency = saliency_maps(train, cfg.saliency)
        regions = salient_regions(saliency)
        own_slot = bank_sources[None, :] == torch.arange(len(train))[:, None]  # [N, slots]

        def batch_loss(indices: torch.Tensor) -> torch.Tensor:
            inputs, masks = (t.to(self.device) for t in forge_batch(train, indices, saliency, regions, cfg, generator))
            slots, _ = bank.contrast_sets(inputs, cfg.contrast_set_size, own_slot[indices].to(self.device))
            pick = torch.randint(slots.shape[1], (len(indices),), generator=generator)
            chosen = slots.cpu()[torch.arange(len(indices)), pick]
            guidance = [level[chosen.to(self.device)] for level in bank_guidance]
            return self._segmentation_loss(self._segment(inputs, guidance), masks)

        return self._train_stage(network, cfg.epochs, len(train), batch_loss, generator, progress, "segmentation")

    def _segmentation_loss(self, logits: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
        """Focal loss of the full-size map, plus ``side_weight`` times the mean focal loss of the coarser heads."""
        cfg = self.config
        final = focal_loss(self._upsample(logits[-1]), masks, cfg.focal_gamma)
        sides = [focal_loss(side, F.adaptive_avg_pool2d(masks, side.shape[-2:]), cfg.focal_gamma) for side in logits[:-1]]
        return final + cfg.side_weight * torch.stack(sides).mean()

    def _reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The reconstruction network's output and decoder features, run at the model's precision, in fp32."""
        with self.autocast():
            reconstruction, features = self.networks["reconstruction"](images.contiguous(memory_format=torch.channels_last))
        return reconstruction.float(), [feature.float() for feature in features]

    def _segment(self, images: torch.Tensor, guidance: list[torch.Tensor]) -> list[torch.Tensor]:
        """Segmentation logits at every decoder level, run at the model's precision, in fp32."""
        with self.autocast():
            logits = self.networks["segmentation"](images.contiguous(memory_format=torch.channels_last), guidance)
        return [level.float() for level in logits]

    def _guidance(self, guide_images: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale decoder features of the reconstruction network for [B, 3, S, S] normal images."""
        return self._reconstruct(guide_images)[1]

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=self.shape, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ inference

    def infer(self, image: torch.Tensor, with_frames: bool = True) -> Inference:
        cfg = self.config
        bank: GuidanceBank = self.networks["bank"]
        slots, similarities = bank.contrast_sets(image[None], cfg.contrast_set_size)
        guide_image = bank.pixels(slots[0, :1]).to(self.device)
        logits = self._segment(image[None], self._guidance(guide_image))
        anomaly_map = torch.sigmoid(self._upsample(logits[-1]))
        score = float(box_filter(anomaly_map, cfg.score_filter).max())
        extras = {"guidance": guide_image[0].permute(1, 2, 0).cpu().numpy(), "guidance_similarity": float(similarities[0, 0])}
        frames = self._frames(image, slots[0], similarities[0], logits) if with_frames else ()
        return Inference(score=score, anomaly_map=anomaly_map[0, 0], frames=frames, extras=extras)

    def _frames(self, image: torch.Tensor, slots: torch.Tensor, similarities: torch.Tensor, logits: list[torch.Tensor]) -> tuple[Frame, ...]:
        """Saliency, the contrast set with the chosen guidance image, then the map at each decoder scale."""
        cfg = self.config
        bank: GuidanceBank = self.networks["bank"]
        picture = image.permute(1, 2, 0).cpu().numpy()
        saliency = saliency_maps(image[None].cpu(), cfg.saliency)
        contrast = bank.pixels(slots).permute(0, 2, 3, 1).cpu().numpy()
        frames = [
            Frame(
                caption="Saliency: where forged anomalies were placed during training (inside the salient region)",
                panels=(
                    Panel("input", picture, "image"),
                    Panel("saliency", saliency[0, 0].numpy(), "mask"),
                    Panel("salient region", salient_regions(saliency)[0, 0].float().numpy(), "mask"),
                ),
            ),
            Frame(
                caption=f"Contrast set: the {len(slots)} most similar stored normals; the first guides the segmentation",
                panels=(Panel("input", picture, "image"),)
                + tuple(
                    Panel(f"{'guidance' if i == 0 else 'normal'} (cos {float(s):.3f})", contrast[i], "image")
                    for i, s in enumerate(similarities)
                ),
            ),
        ]
        for level, level_logits in enumerate(logits):
            scale = self.shape[-1] // level_logits.shape[-1]
            name = "final map" if level == len(logits) - 1 else f"map at 1/{scale} scale"
            frames.append(
                Frame(
                    caption=f"Decoder level {level + 1}/{len(logits)}: segmentation at 1/{scale} of the input",
                    panels=(
                        Panel("input", picture, "image"),
                        Panel("guidance", contrast[0], "image"),
                        Panel(name, torch.sigmoid(self._upsample(level_logits))[0, 0].cpu().numpy(), "heat"),
                    ),
                )
            )
        return tuple(frames)


def forged_examples(
    data: str | Path | AnomalyDataset, n: int = 4, config: SGSFConfig | None = None, seed: int = 0, pool: int = 12
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` forged training examples of a category as (image HxWx3 float in [0, 1], mask HxW float) pairs.

    Needs only the config and the training images (no trained model): ``pool`` training images are
    loaded at the config's size; patches come from the other images of the pool.
    """
    config = config or SGSFConfig()
    dataset = data if isinstance(data, AnomalyDataset) else open_dataset(data)
    if not dataset.train:
        raise DataError(f"{dataset.root}: no training images to forge anomalies on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset.train), size=min(len(dataset.train), max(n, pool)), replace=False)
    shape = config.input_shape or dataset_input_shape(dataset, config.size, SGSF.input_multiple)
    images = torch.stack([image_to_tensor(resize_image(load_image(dataset.train[i].path), shape)) for i in chosen])
    copies = math.ceil(n / len(images))
    forged, masks = forge_images(images, config, torch.Generator().manual_seed(seed), copies)
    return [(forged[i].permute(1, 2, 0).numpy(), masks[i, 0].numpy()) for i in range(n)]
