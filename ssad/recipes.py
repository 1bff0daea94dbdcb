"""Training recipes: the config each (method, dataset) is trained with, and the Train tab's session recipe.

``train``, ``rebuild``, ``select`` and the app all ask :func:`training_config`, so that ``python -m ssad train``
with its defaults gives the config a committed model records. A recipe sets config fields and may give
its length as optimiser ``steps`` instead of epochs: the epochs then follow from the number of training
images, so every job of a kind costs about the same whatever its dataset's size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ssad.catalog import SURFACE_MODELS
from ssad.data import AnomalyDataset
from ssad.methods import MethodConfig, method_class
from ssad.methods.base import dataset_input_shape, held_out_split

EVERY_DATASET = "*"
SURFACES = "surfaces"
"""The recipe key of every model in :data:`ssad.catalog.SURFACE_MODELS`."""

RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    # About 7-13 minutes of training on one CPU thread at the default 128 x 128 pixels, so that a job with its
    # loading and calibration stays within 15 minutes: SGSF at 0.16-0.18 s a step (batch 16, bf16 on AVX-512
    # BF16; a segmentation step measured 0.32 s in fp32 there, and an AVX2 CPU took 0.41-0.49 s a step in
    # fp32), ST-SSAD at 0.8 s (batch 32 with its tuning, fp32) and SSM at 1.33 s (batch 8, three masks a
    # step, bf16 on AVX-512 BF16; 2.5 s in fp32 there). On two shared cores a step takes 2-3 times longer.
    ("sgsf", EVERY_DATASET): {"steps": 3600, "recon_share": 0.1},
    ("st-ssad", EVERY_DATASET): {"steps": 300},  # and 136 more of warm-up and of its start grid
    # The learning rate stays at its full value for 80 % of so short a training (the paper's three x0.1 steps,
    # from 30 % on, are for 50 epochs).
    ("ssm", EVERY_DATASET): {"steps": 540, "lr_milestones": (0.8,)},
    # A salient object means nothing on a surface: forgeries go anywhere (METHODS.md: an all-ones map for textures).
    ("sgsf", SURFACES): {"saliency": "uniform"},
}
"""Per (method id, ``*`` | ``surfaces`` | dataset | model): later keys override earlier ones, and an ``epochs`` at
a more specific key replaces a ``steps`` budget (and the other way round)."""

SESSION_RECIPE: dict[str, dict[str, Any]] = {
    "ssm": {"size": 64, "batch_size": 4, "steps": 200, "lr": 1e-3, "lr_milestones": (0.8,)},  # 128 px: > 180 s here
    "sgsf": {"size": 128, "batch_size": 8, "steps": 360, "recon_share": 0.15},
    "st-ssad": {"size": 128, "batch_size": 32, "steps": 160, "gaussian_jitter_copies": 7},
}
"""Training in one browser session, per method, sized so that 16 bottle images train within the Train tab's
180 s on 2 shared CPU cores. ST-SSAD's Gaussians take 7 jittered copies of each of its 8 training normals:
image AUROC, mean of seeds 0-2, 0.863 -> 0.896 on bottle and 0.610 -> 0.628 on pill (fp32, one thread)."""


def epochs_for_steps(recipe: dict[str, Any], n_train: int, batch_size: int, step_scale: float = 1.0) -> dict[str, Any]:
    """The recipe with its ``steps`` (and SGSF's ``recon_share`` of them) turned into epochs over ``n_train`` images."""
    recipe = dict(recipe)
    steps, recon_share = recipe.pop("steps", None), recipe.pop("recon_share", None)
    if steps is None:
        return recipe
    steps_per_epoch = max(1, -(-n_train // batch_size))
    epochs = max(1, -(-max(1, round(steps * step_scale)) // steps_per_epoch))
    if recon_share is not None:
        recipe["recon_epochs"] = max(1, round(recon_share * epochs))
    return {**recipe, "epochs": epochs}


def _without_steps(recipe: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k not in ("steps", "recon_share")}


def _merged(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Recipe layers from the general to the specific; an ``epochs`` replaces an earlier ``steps`` and the other way round."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if "epochs" in layer:
            merged = _without_steps(merged)
        if "steps" in layer:
            merged.pop("epochs", None)
        merged.update(layer)
    return merged


def recipe_for(method_id: str, dataset: AnomalyDataset) -> dict[str, Any]:
    """The recipe entries that apply to a method on a dataset, merged from the general to the specific."""
    kinds = (EVERY_DATASET, *([SURFACES] if dataset.name in SURFACE_MODELS else []), dataset.dataset, dataset.name)
    return _merged([RECIPES.get((method_id, key), {}) for key in kinds])


def training_config(method_id: str, dataset: AnomalyDataset, overrides: dict[str, Any] | None = None) -> MethodConfig:
    """The config a method trains with on a dataset: its defaults, the recipe, then ``overrides`` (an ``epochs``
    there replaces the recipe's steps); the input shape follows the training images' median aspect."""
    cls = method_class(method_id)
    combined = _merged([recipe_for(cls.id, dataset), dict(overrides or {})])
    plain = dataclasses.replace(cls.config_class(), **_without_steps(combined))
    n_train = len(held_out_split(dataset, plain)[0])
    config = dataclasses.replace(cls.config_class(), **epochs_for_steps(combined, n_train, plain.batch_size))
    if config.input_shape is None:
        config = dataclasses.replace(config, input_shape=dataset_input_shape(dataset, config.size, cls.input_multiple))
    return config
