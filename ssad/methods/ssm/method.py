"""SSM: Self-Supervised Masking (Huang et al., IEEE TMM 2023), with progressive mask refinement.

Training inpaints the image through complementary random masks of k x k cells; inference hides every
region in turn, judges which regions are normal, uncovers them and inpaints again, so that the
inpainting net sees the normal context and the map sharpens onto the anomaly.

Choices where the paper and code leave room (also in the README):
* Widths are 16-32-64-128-128 (the paper's 64-512 scaled down 4x) so that a category trains on 2 CPU
  cores in minutes; input 128 px as in the paper's OCT pipeline.
* The map is ``1 - mean multi-scale GMS`` (the code's score up to a constant), averaged over cell sizes
  with weights proportional to 1/N^2 (N = cells per side), smoothed with a Gaussian of sigma 7 px.
* The "normal" decision of refinement keeps the code's block rule (an 8 px block is uncovered when more
  than ``refine_ratio`` of its pixels lie below a threshold on the map) but not its threshold: the code's
  -0.96 equals ``mean GMS >= 0.984``, which a smaller CPU model, reconstructing less sharply, almost never
  reaches. The threshold is calibrated instead so that on held-out normals a share
  ``refine_hidden_share`` of the blocks stays hidden after the first round: what is hidden beyond that
  share on an image is what its normals would not hide (set ``refine_threshold`` to fix it).
* The image score replaces the code's test-set min-max normalisation (impossible for one uploaded
  image) by standardising the two terms (map maximum, reconstruction MSE) with held-out normal images.
* In the code, a pixel uncovered as normal gets zero error in the next round, so images judged mostly
  normal collapse onto one tied score. Here an uncovered pixel keeps the inpainting of the last round
  that hid it: each round's composite is inpainted everywhere, the still hidden pixels with more normal
  context, and its multi-scale error is computed whole (with the input copied into the uncovered
  pixels instead, the coarse GMS scales of a small hidden region mix in exact pixels and its error
  drops, so the refined map understated what stayed hidden; `docs/ssm-refinement.md`).
* Each pixel's map value is the error of the last round that hid it, not the error recomputed on the last
  composite: recomputed, the multi-scale GMS and the smoothing carried the change of the re-inpainted
  regions onto pixels already judged normal. A refined round's error is put on the first round's scale
  by an affine map fitted on held-out normals (mean and spread of their hidden pixels' errors), since with
  more context the same pixels are inpainted better. Chosen without test labels by ``select`` (forged
  held-out normals), on bottle and pill; ``docs/ssm-refinement.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ssad.methods.base import Inference, Method, MethodConfig, Progress, TrainingData
from ssad.methods.ssm.masks import complementary_masks, uncover
from ssad.methods.ssm.network import MaskedUNet
from ssad.nn.filters import gaussian_blur
from ssad.nn.losses import msgms_anomaly_map, msgms_loss, ssim
from ssad.result import Frame, Panel


@dataclass
class SSMConfig(MethodConfig):
    """SSM's settings; the paper's values are noted where ours differ."""

    size: int = 128
    epochs: int = 60  # paper: 50 epochs of 1000 OCT images at batch 32
    batch_size: int = 8  # paper: 32
    lr: float = 1e-3  # paper: 1e-4; fewer steps here
    weight_decay: float = 1e-5
    lr_milestones: tuple[float, ...] = (0.3, 0.6, 0.9)  # x0.1 at these fractions of training (paper: 15/30/45 of 50)
    base_width: int = 16  # paper: 64
    cell_sizes: tuple[int, ...] = (2, 4, 8)
    n_masks: int = 3
    mse_weight: float = 1.0
    gms_weight: float = 1.0
    ssim_weight: float = 1.0
    mask_weight: float = 1.0
    flip_augment: bool = False  # not in the paper; for texture categories
    refine_iterations: int = 3  # masked inference rounds; paper default 2 (one refinement)
    refine_block: int = 8  # uncovering block in pixels at the input size (paper: 8 at 128 px)
    refine_ratio: float = 0.8  # a block is uncovered when more than this share of its pixels is normal
    refine_threshold: float | None = None  # map value below which a pixel is normal; None = calibrated
    refine_hidden_share: float = 0.1  # of held-out normals' blocks left hidden after round 1, when calibrated
    smoothing_sigma: float = 7.0
    inference_seed: int = 8

    scoring_fields: ClassVar[tuple[str, ...]] = MethodConfig.scoring_fields + (
        "refine_iterations", "refine_block", "refine_ratio", "refine_threshold", "refine_hidden_share", "smoothing_sigma",
        "inference_seed",
    )
    retired_fields: ClassVar[tuple[str, ...]] = ("refine_quantile",)  # the pixel-quantile threshold, replaced by block shares


class SSM(Method):
    """Self-Supervised Masking with progressive mask refinement."""

    id = "ssm"
    display_name = "SSM"
    config_class = SSMConfig
    config: SSMConfig

    def build_networks(self) -> nn.ModuleDict:
        return nn.ModuleDict({"unet": MaskedUNet(self.config.base_width)}).to(memory_format=torch.channels_last)

    def on_loaded(self) -> None:
        self._inference_masks = None

    # ------------------------------------------------------------------ training

    def train_networks(self, data: TrainingData, progress: Progress) -> dict[str, Any]:
        cfg = self.config
        unet = self.networks["unet"]
        optimizer = torch.optim.Adam(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[round(f * total) for f in cfg.lr_milestones], gamma=0.1
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        epoch_losses = []
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data.train), generator=generator)
            running = 0.0
            for step, batch_indices in enumerate(order.split(cfg.batch_size)):
                batch = data.train[batch_indices].to(self.device)
                if cfg.flip_augment:
                    batch = _random_flips(batch, generator)
                cell = cfg.cell_sizes[int(torch.randint(len(cfg.cell_sizes), (1,), generator=generator))]
                masks = complementary_masks(self.shape, cell, cfg.n_masks, generator).to(self.device)
                loss = self._inpainting_loss(batch, masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.item()
                done = epoch * steps_per_epoch + step + 1
                progress(done, total, f"epoch {epoch + 1}/{cfg.epochs} loss {running / (step + 1):.4f}")
            epoch_losses.append(round(running / steps_per_epoch, 5))
        return {"epoch_loss": epoch_losses, "steps": total}

    def _inpainting_loss(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """MSE + MS-GMS + SSIM on the composite of hidden-pixel predictions, plus the mask-prediction MSE."""
        cfg = self.config
        batch = images.shape[0]
        outputs = self._run_passes(images, masks)  # [n_masks, B, 4, H, W]
        composite = (outputs[:, :, :3] * (1 - masks[:, None])).sum(dim=0)
        predicted_masks = outputs[:, :, 3:]
        true_masks = masks[:, None].expand(-1, batch, -1, -1, -1)
        return (
            cfg.mse_weight * F.mse_loss(composite, images)
            + cfg.gms_weight * msgms_loss(images, composite)
            + cfg.ssim_weight * (1 - ssim(images, composite))
            + cfg.mask_weight * cfg.n_masks * F.mse_loss(predicted_masks, true_masks)
        )

    def _run_passes(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """All masked passes of a batch in one forward: [M, 1, H, W] masks x [B, 3, H, W] -> [M, B, 4, H, W]."""
        n_masks, batch = masks.shape[0], images.shape[0]
        masked = (images[None] * masks[:, None]).flatten(0, 1)
        mask_input = masks[:, None].expand(-1, batch, -1, -1, -1).flatten(0, 1)
        with self.autocast():
            outputs = self.networks["unet"](
                masked.contiguous(memory_format=torch.channels_last), mask_input.contiguous(memory_format=torch.channels_last)
            )
        return outputs.float().view(n_masks, batch, *outputs.shape[1:])

    def fit_scoring(self, held_out: torch.Tensor) -> None:
        """Learn, from held-out normals, the refinement threshold (unless fixed), each refined round's rescaling,
        and the normal spread of the two score terms."""
        cfg = self.config
        if cfg.refine_threshold is None:
            first_maps = torch.stack([self._refine(image.to(self.device), iterations=1)[0][-1]["map"] for image in held_out])
            levels = self._block_levels(first_maps).flatten()
            self.state["refine_threshold"] = float(torch.quantile(levels, 1 - cfg.refine_hidden_share))
        else:
            self.state["refine_threshold"] = cfg.refine_threshold
        self.state["refine_rescale"] = []
        for round_index in range(1, cfg.refine_iterations):
            self.state["refine_rescale"].append(self._fit_rescale(held_out, round_index))
        rounds = [self._refine(image.to(self.device))[0][-1] for image in held_out]
        for term in ("map_max", "mse"):
            values = np.array([r[term] for r in rounds])
            self.state[f"{term}_mean"] = float(values.mean())
            self.state[f"{term}_std"] = float(max(values.std(), 1e-8))

    def _fit_rescale(self, held_out: torch.Tensor, round_index: int) -> list[float]:
        """Scale and offset that put round ``round_index``'s error of the pixels it hides on the first round's scale.

        A refined round inpaints the same pixels with more normal context, so its raw error reads lower than
        the first round's; matching the mean and spread of the two over the held-out normals' hidden pixels
        lets one map hold pixels last hidden in different rounds, and the threshold (set on first-round
        maps) judge every round alike.
        """
        first_errors, refined_errors = [], []
        for image in held_out:
            rounds = self._refine(image.to(self.device), iterations=round_index + 1)[0]
            hidden = ~rounds[-1]["uncovered"]
            first_errors.append(rounds[0]["error"][hidden])
            refined_errors.append(rounds[-1]["error"][hidden])
        return _moment_match(torch.cat(refined_errors), torch.cat(first_errors))

    def ablations(self) -> dict[str, Method]:
        """SSM without refinement (a single round of masked inpainting), to show what refinement adds."""
        return {"one_round": self.with_scoring_settings(refine_iterations=1)}

    # ------------------------------------------------------------------ inference

    def _masks_for_round(self, round_index: int) -> torch.Tensor:
        """The masks of one inference round, for all cell sizes: [cells * n_masks, 1, H, W], the same for every image."""
        cached = getattr(self, "_inference_masks", None)
        if cached is None:
            cfg = self.config
            cached = self._inference_masks = [
                torch.cat(
                    [
                        complementary_masks(self.shape, cell, cfg.n_masks, torch.Generator().manual_seed(cfg.inference_seed + r))
                        for cell in cfg.cell_sizes
                    ]
                ).to(self.device)
                for r in range(cfg.refine_iterations)
            ]
        return cached[round_index]

    def _refine(self, image: torch.Tensor, iterations: int | None = None) -> tuple[list[dict[str, Any]], torch.Tensor]:
        """Progressive mask refinement: returns each round's map, raw error, mask and composite, and the final composite.

        A pixel's map value is the error of the last round that hid it (rescaled to the first round's scale).
        """
        cfg = self.config
        iterations = iterations or cfg.refine_iterations
        n_cells = len(cfg.cell_sizes)
        weights = torch.tensor([c**2 for c in cfg.cell_sizes], dtype=torch.float32, device=self.device)
        weights = (weights / weights.sum()).view(n_cells, 1, 1, 1)
        uncovered = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        rounds = []
        for round_index in range(iterations):
            masks = uncover(self._masks_for_round(round_index), uncovered)
            outputs = self._run_passes(image[None], masks)[:, 0, :3]  # [cells*n_masks, 3, H, W]
            hidden = (1 - masks).view(n_cells, cfg.n_masks, 1, *self.shape)
            composite = (outputs.view(n_cells, cfg.n_masks, 3, *self.shape) * hidden).sum(dim=1)
            if round_index > 0:
                # An uncovered pixel keeps the inpainting of the last round that hid it, so every round's composite
                # is inpainted everywhere and its multi-scale error compares like with like.
                composite = torch.where(uncovered, composite_before, composite)
            composite_before = composite
            gms_error = (weights * msgms_anomaly_map(image[None], composite)).sum(dim=0)[0]  # the input broadcasts, so its gradients are computed once
            squared_error = (composite - image).pow(2).mean(dim=1).sum(dim=0)
            if round_index == 0:
                kept_error = gms_error
            else:
                fitted = self.state["refine_rescale"]  # the round being fitted (_fit_rescale) is read unscaled
                scale, offset = fitted[round_index - 1] if round_index <= len(fitted) else (1.0, 0.0)
                kept_error = torch.where(uncovered, kept_error, scale * gms_error + offset)
            anomaly_map = gaussian_blur(kept_error[None, None], cfg.smoothing_sigma)[0, 0]
            rounds.append(
                {
                    "map": anomaly_map,
                    "error": gms_error,
                    "uncovered": uncovered.clone(),
                    "masked_input": image * masks[-1],
                    "mask_cell": cfg.cell_sizes[-1],
                    "composite": composite.mean(dim=0).clamp(0, 1),
                    "map_max": float(anomaly_map.max()),
                    "mse": float(squared_error.mean()),
                }
            )
            if round_index + 1 < iterations:
                uncovered = uncovered | self._normal_blocks(anomaly_map)
        return rounds, rounds[-1]["composite"]

    def _block_levels(self, maps: torch.Tensor) -> torch.Tensor:
        """Per ``refine_block`` block of [..., H, W] maps, the lowest threshold under which more than
        ``refine_ratio`` of its pixels lie (a block is normal when this level is at most the threshold): [..., H/b, W/b]."""
        block = self.config.refine_block
        blocks = maps.unflatten(-2, (-1, block)).unflatten(-1, (-1, block)).transpose(-3, -2).flatten(-2)
        return blocks.kthvalue(math.floor(self.config.refine_ratio * block**2) + 1, dim=-1).values

    def _normal_blocks(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Blocks whose share of pixels at most the refinement threshold exceeds ``refine_ratio``, as a pixel mask."""
        block = self.config.refine_block
        normal = self._block_levels(anomaly_map) <= self.state["refine_threshold"]
        return normal.repeat_interleave(block, dim=0).repeat_interleave(block, dim=1)

    def infer(self, image: torch.Tensor, with_frames: bool = True) -> Inference:
        rounds, composite = self._refine(image)
        final = rounds[-1]
        state = self.state
        score = (final["map_max"] - state["map_max_mean"]) / state["map_max_std"] + (
            final["mse"] - state["mse_mean"]
        ) / state["mse_std"]
        frames = tuple(_round_frame(i, r, len(rounds)) for i, r in enumerate(rounds)) if with_frames else ()
        return Inference(
            score=score,
            anomaly_map=final["map"],
            frames=frames,
            extras={
                "reconstruction": composite.permute(1, 2, 0).cpu().numpy(),
                "network_passes": len(rounds) * len(self.config.cell_sizes) * self.config.n_masks,
                "uncovered_fraction": float(final["uncovered"].float().mean()),
                "hidden": (~final["uncovered"]).cpu().numpy(),
            },
        )


def _moment_match(values: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Scale and offset that give ``values`` the mean and standard deviation of ``target``; identity when either is empty."""
    if values.numel() < 2 or target.numel() < 2 or float(values.std()) == 0:
        return [1.0, 0.0]
    scale = float(target.std() / values.std())
    return [scale, float(target.mean() - scale * values.mean())]


def _round_frame(index: int, refinement_round: dict[str, Any], n_rounds: int) -> Frame:
    uncovered = refinement_round["uncovered"].float()
    caption = (
        f"Round {index + 1}/{n_rounds}: every region masked in turn"
        if index == 0
        else f"Round {index + 1}/{n_rounds}: {100 * float(uncovered.mean()):.0f}% uncovered as normal, the rest inpainted"
    )
    return Frame(
        caption=caption,
        panels=(
            Panel(f"one of the masks (k={refinement_round['mask_cell']})", refinement_round["masked_input"].permute(1, 2, 0).cpu().numpy(), "image"),
            Panel("uncovered (white)", uncovered.cpu().numpy(), "mask"),
            Panel("inpainted", refinement_round["composite"].permute(1, 2, 0).cpu().numpy(), "image"),
            Panel("anomaly map", refinement_round["map"].cpu().numpy(), "heat"),
        ),
    )


def _random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip_h, flip_v = torch.rand(2, images.shape[0], generator=generator) < 0.5
    images = torch.where(flip_h.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    return torch.where(flip_v.view(-1, 1, 1, 1).to(images.device), images.flip(-2), images)
