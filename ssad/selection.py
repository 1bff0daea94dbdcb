"""Choose among candidate configurations of a method without looking at any test label.

A share of the normal training images is set aside once, the same for every candidate. Each candidate
is trained on the rest and judged by one number: the AUROC of its scores on the set-aside normals
against forged copies of them. The forgeries are SGSF's saliency-guided Perlin anomalies (procedural
textures and transformed patches of other images, blended into irregular regions on the object): a
family of defects that SSM's masks and ST-SSAD's CutDiff never produce, so the criterion does not
merely reward a candidate for its own pretext task. SGSF trains on exactly these forgeries, so the
criterion would be circular for it, and selecting SGSF this way is refused.

Selection only ranks; the chosen configuration is then trained on all training images as usual.
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
from ssad.methods.base import Progress, no_progress
from ssad.methods.sgsf import SGSFConfig, forge_images
from ssad.metrics import image_auroc
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
    return forge_images(normals, SGSFConfig(size=normals.shape[-1]), torch.Generator().manual_seed(seed), copies)[0]


def forgery_auroc(method: Method, normals: torch.Tensor, forged: torch.Tensor) -> float:
    """AUROC of a trained method's scores: set-aside normals (negatives) against their forgeries (positives)."""
    method.networks.eval()
    with torch.inference_mode():
        scores = [method.infer(image.to(method.device), with_frames=False).score for image in torch.cat([normals, forged])]
    labels = np.r_[np.zeros(len(normals)), np.ones(len(forged))]
    return float(image_auroc(labels, np.array(scores)))


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
    probes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # per input size: the set-aside normals and their forgeries
    results = []
    for overrides in candidate_grid(axes):
        method = cls(dataclasses.replace(base, **overrides), device)
        started = time.perf_counter()
        method.fit(train_part, progress)
        if method.config.size not in probes:
            normals = method.load_images([sample.path for sample in aside.train])
            probes[method.config.size] = normals, forge_copies(normals, copies, seed)
        criterion = forgery_auroc(method, *probes[method.config.size])
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
