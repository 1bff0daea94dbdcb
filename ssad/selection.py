"""Choose among candidate configurations of a method without looking at any test label.

A share of the normal training images is set aside once, the same for every candidate. Each candidate
is trained on the rest and judged by one number: the AUROC of its scores on the set-aside normals
against forged copies of them. The forgeries are SGSF's saliency-guided Perlin anomalies (procedural
textures and transformed patches of other images, blended into irregular regions on the object): a
family of defects that SSM's masks and ST-SSAD's CutDiff never produce, so the criterion does not
merely reward a candidate for its own pretext task. SGSF trains on exactly these forgeries, so the
criterion would be circular for it, and selecting SGSF this way is refused.

Selection only ranks; the chosen configuration is then trained on all training images as usual.

Settings that only score (SSM's refinement and colour weight, say) need no training: :func:`select_scoring`
recalibrates a trained model once per candidate on its own held-out normals (never trained on) and judges
it by the same forgeries, by image score and by map (pixel AUROC of the forged regions).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np
import torch

from ssad.data import AnomalyDataset
from ssad.errors import SsadError
from ssad.methods import Method, MethodConfig, method_class
from ssad.methods.base import Progress, held_out_split, no_progress
from ssad.methods.sgsf import SGSFConfig, forge_images
from ssad.metrics import image_auroc, pixel_auroc
from ssad.provenance import provenance

CIRCULAR_METHODS = frozenset({"sgsf"})
"""Methods trained on the very forgeries the criterion uses."""


def candidate_grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the values given per config field, in order: ``{a: [1, 2], b: [3]}`` -> 2 candidates."""
    if any(not values for values in axes.values()):
        raise SsadError("every grid field needs at least one value")
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def set_aside(dataset: AnomalyDataset, share: float, seed: int) -> tuple[AnomalyDataset, AnomalyDataset]:
    """Split the training normals: (dataset to train candidates on, dataset whose ``train`` is the set-aside normals)."""
    n_aside = round(share * len(dataset.train))
    if not 2 <= n_aside <= len(dataset.train) - 2:
        raise SsadError(f"{dataset.root}: {len(dataset.train)} training images are too few to set {share:.0%} aside")
    order = np.random.default_rng(seed).permutation(len(dataset.train))
    aside = tuple(dataset.train[i] for i in sorted(order[:n_aside]))
    rest = tuple(dataset.train[i] for i in sorted(order[n_aside:]))
    return dataclasses.replace(dataset, train=rest), dataclasses.replace(dataset, train=aside, test=())


def forge_copies(normals: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """``copies`` forged versions of each [N, 3, H, W] normal (SGSF's default forging settings), seeded."""
    return forge_images(normals, SGSFConfig(), torch.Generator().manual_seed(seed), copies)[0]


def forgery_scores(method: Method, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A trained method's image scores [N] and maps [N, H, W] (at its input size) for [N, 3, H, W] images."""
    method.networks.eval()
    with torch.inference_mode():
        inferences = [method.infer(image.to(method.device), with_frames=False) for image in images]
    return np.array([i.score for i in inferences]), torch.stack([i.anomaly_map.float().cpu() for i in inferences]).numpy()


def forgery_auroc(method: Method, normals: torch.Tensor, forged: torch.Tensor) -> float:
    """AUROC of a trained method's scores: set-aside normals (negatives) against their forgeries (positives)."""
    scores, _ = forgery_scores(method, torch.cat([normals, forged]))
    labels = np.r_[np.zeros(len(normals)), np.ones(len(forged))]
    return float(image_auroc(labels, scores))


def select_scoring(
    method: Method,
    dataset: AnomalyDataset,
    axes: dict[str, list[Any]],
    copies: int = 3,
    seed: int = 0,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Rank scoring-only settings of a trained model by the mean of two forgery AUROCs, without retraining.

    Each candidate is the model with those settings, recalibrated on its held-out normals; it is judged by
    the AUROC of its image scores (held-out normals against their forged copies) and of its maps on the
    forged copies (forged pixels against the rest). The first candidate wins ties.
    """
    if method.id in CIRCULAR_METHODS:
        raise SsadError(f"{method.display_name} trains on the forgeries this selection scores with; its criterion would be circular")
    unknown = set(axes) - set(method.config.scoring_fields)
    if unknown:
        raise SsadError(
            f"not scoring settings of {method.display_name}: {', '.join(sorted(unknown))} (they need training: use --data only)"
        )
    _, held_out = held_out_split(dataset, method.config)
    normals = method.load_images(held_out)
    forged, masks = forge_images(normals, SGSFConfig(), torch.Generator().manual_seed(seed), copies)
    labels = np.r_[np.zeros(len(normals)), np.ones(len(forged))]
    results = []
    for overrides in candidate_grid(axes):
        started = time.perf_counter()
        variant = method.with_scoring_settings(**overrides)
        variant.recalibrate(dataset, progress)
        scores, maps = forgery_scores(variant, torch.cat([normals, forged]))
        by_image = float(image_auroc(labels, scores))
        by_pixel = float(pixel_auroc(masks[:, 0].numpy() > 0.5, maps[len(normals):]))
        results.append(
            {
                "overrides": overrides, "forgery_auroc": round(by_image, 4), "forgery_pixel_auroc": round(by_pixel, 4),
                "criterion": round((by_image + by_pixel) / 2, 4), "seconds": round(time.perf_counter() - started, 1),
            }
        )
    best = max(range(len(results)), key=lambda i: (results[i]["criterion"], -i))
    return {
        "method": method.id, "model": dataset.name, "held_out": len(normals), "forged_copies": copies, "seed": seed,
        "candidates": results, "chosen": results[best]["overrides"], **provenance(method.device),
    }


def select(
    method_id: str,
    dataset: AnomalyDataset,
    base: MethodConfig,
    axes: dict[str, list[Any]],
    share: float = 0.15,
    copies: int = 3,
    seed: int = 0,
    progress: Progress = no_progress,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train every candidate of the grid around ``base`` and rank them by :func:`forgery_auroc`.

    Returns the candidates (overrides, criterion, training seconds), the chosen overrides and the provenance
    (commit, date, device); the first candidate wins ties, so list the default value of each field first.
    """
    cls = method_class(method_id)
    if cls.id in CIRCULAR_METHODS:
        raise SsadError(f"{cls.display_name} trains on the forgeries this selection scores with; its criterion would be circular")
    unknown = set(axes) - {f.name for f in dataclasses.fields(base)}
    if unknown:
        raise SsadError(f"not {cls.display_name} config fields: {', '.join(sorted(unknown))}")
    train_part, aside = set_aside(dataset, share, seed)
    probes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # per input shape: the set-aside normals and their forgeries
    results = []
    for overrides in candidate_grid(axes):
        method = cls(dataclasses.replace(base, **overrides), device)
        started = time.perf_counter()
        method.fit(train_part, progress)
        if method.shape not in probes:
            normals = method.load_images([sample.path for sample in aside.train])
            probes[method.shape] = normals, forge_copies(normals, copies, seed)
        criterion = forgery_auroc(method, *probes[method.shape])
        results.append({"overrides": overrides, "forgery_auroc": round(criterion, 4), "seconds": round(time.perf_counter() - started, 1)})
    best = max(range(len(results)), key=lambda i: (results[i]["forgery_auroc"], -i))
    return {
        "method": cls.id,
        "model": dataset.name,
        "set_aside": len(aside.train),
        "forged_copies": copies,
        "seed": seed,
        "base": dataclasses.asdict(base),
        "candidates": results,
        "chosen": results[best]["overrides"],
        **provenance(device),
    }
