"""Score every test image of a dataset with a trained method and compute the metrics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ssad.data import AnomalyDataset
from ssad.errors import DataError
from ssad.methods.base import Method, Progress, no_progress
from ssad.metrics import evaluate_scores, image_auroc
from ssad.precision import resolve_precision


def evaluate(method: Method, dataset: AnomalyDataset, progress: Progress = no_progress) -> dict[str, Any]:
    """The contract's evaluation JSON: image and pixel metrics over the test split, and time per image.

    Maps are compared with the masks at the masks' own resolution. The AUROC of each defect type or
    disease class against the normal test images is added under ``per_class_auroc``.
    """
    if not dataset.test:
        raise DataError(f"{dataset.root}: no test images to evaluate")
    scores, labels, maps, masks = [], [], [], []
    seconds = 0.0
    for done, sample in enumerate(dataset.test, 1):
        image = sample.load_image()
        started = time.perf_counter()
        result = method.predict(image, with_frames=False)
        seconds += time.perf_counter() - started
        scores.append(result.score)
        labels.append(sample.label)
        if dataset.has_masks:
            maps.append(result.anomaly_map.astype(np.float32))
            masks.append(sample.load_mask(result.anomaly_map.shape))
        progress(done, len(dataset.test), "scoring test images")
    scores_array, labels_array = np.array(scores), np.array(labels)
    metrics = evaluate_scores(
        labels_array,
        scores_array,
        np.stack(masks) if masks else None,
        np.stack(maps) if maps else None,
    )
    report: dict[str, Any] = {
        "method": method.id,
        "dataset": dataset.dataset,
        "category": dataset.category,
        **metrics,
        "n_test": len(dataset.test),
        "seconds_per_image": round(seconds / len(dataset.test), 4),
        "precision": resolve_precision(method.config.precision, method.device),
    }
    report["per_class_auroc"] = _per_class_auroc(dataset, scores_array)
    return report


def _per_class_auroc(dataset: AnomalyDataset, scores: np.ndarray) -> dict[str, float]:
    """AUROC of each anomalous test class (MVTec defect type, OCT disease) against the normal test images."""
    types = np.array([sample.defect_type for sample in dataset.test])
    labels = np.array([sample.label for sample in dataset.test])
    out = {}
    for defect_type in sorted(set(types[labels == 1])):
        chosen = (labels == 0) | (types == defect_type)
        value = image_auroc(labels[chosen], scores[chosen])
        if value is not None:
            out[defect_type] = value
    return out
