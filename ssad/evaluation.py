"""Score every test image of a dataset with a trained method and compute the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from PIL import Image

from ssad.data import AnomalyDataset
from ssad.errors import DataError, SsadError
from ssad.methods.base import Method, Progress, no_progress
from ssad.metrics import evaluate_scores, image_auroc, pixel_auroc
from ssad.precision import resolve_precision


MAX_SCAN_WIDTHS = 8
"""Per-width AUROC is reported when the test images come in a few widths (OCT acquisitions), not one per image."""


class AblationMetrics(TypedDict, total=False):
    """A method variant without one of its mechanisms, recalibrated and evaluated like the method."""

    image_auroc: float | None
    pixel_auroc: float | None
    unavailable: str


class Refinement(TypedDict, total=False):
    """SSM's refinement measured: pixels still hidden in its last round, and each ablation (``one_round``)."""

    hidden_defect_share: float | None
    hidden_normal_share: float
    one_round: AblationMetrics


class EvaluationReport(TypedDict, total=False):
    """What ``evaluate`` returns (and ``python -m ssad evaluate`` prints as JSON)."""

    method: str
    dataset: str
    category: str
    image_auroc: float | None
    pixel_auroc: float | None
    pixel_ap: float | None
    aupro: float | None
    image_f1_max: float | None
    n_test: int
    seconds_per_image: float
    precision: str
    per_class_auroc: dict[str, float]
    per_width_auroc: dict[str, float]
    refinement: Refinement
    training_note: str


@dataclass
class _TestScores:
    """What one pass over the test split gives: scores, maps at the masks' resolution, widths, hidden pixels."""

    scores: list[float] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    hidden: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("defect", "defect_hidden", "normal", "normal_hidden"), 0))
    seconds: float = 0.0


def _score_test_set(method: Method, dataset: AnomalyDataset, progress: Progress, stage: str) -> _TestScores:
    """Score every test image; tally the pixels a method's refinement still hides (``extras["hidden"]``)."""
    out = _TestScores()
    for done, sample in enumerate(dataset.test, 1):
        image = sample.load_image()
        started = time.perf_counter()
        result = method.predict(image, with_frames=False)
        out.seconds += time.perf_counter() - started
        out.scores.append(result.score)
        out.widths.append(image.shape[1])
        mask = sample.load_mask(result.anomaly_map.shape) if dataset.has_masks else None
        if mask is not None:
            out.maps.append(result.anomaly_map.astype(np.float32))
            out.masks.append(mask)
        if "hidden" in result.extras:
            truth = mask.astype(bool) if mask is not None else np.zeros(image.shape[:2], dtype=bool)
            hidden = np.asarray(Image.fromarray(result.extras["hidden"]).resize(truth.shape[::-1], Image.NEAREST))
            out.hidden["defect"] += int(truth.sum())
            out.hidden["defect_hidden"] += int((hidden & truth).sum())
            out.hidden["normal"] += int((~truth).sum())
            out.hidden["normal_hidden"] += int((hidden & ~truth).sum())
        progress(done, len(dataset.test), stage)
    return out


def evaluate(method: Method, dataset: AnomalyDataset, progress: Progress = no_progress) -> EvaluationReport:
    """The contract's evaluation JSON: image and pixel metrics over the test split, and time per image.

    Maps are compared with the masks at the masks' own resolution. The AUROC of each defect type or
    disease class against the normal test images is added under ``per_class_auroc``, and of each image
    width under ``per_width_auroc`` where they come in a few widths (OCT scans). A method with refinement (SSM) adds
    ``refinement``: the share of defect and of normal pixels still hidden in its last round, pooled over
    the test set, and the metrics of each of its ablations (``one_round``), recalibrated on the same
    held-out normals.
    """
    if not dataset.test:
        raise DataError(f"{dataset.root}: no test images to evaluate")
    labels = np.array([sample.label for sample in dataset.test])
    tested = _score_test_set(method, dataset, progress, "scoring test images")
    scores = np.array(tested.scores)
    report: EvaluationReport = {
        "method": method.id,
        "dataset": dataset.dataset,
        "category": dataset.category,
        **evaluate_scores(labels, scores, tested.masks or None, tested.maps or None),
        "n_test": len(dataset.test),
        "seconds_per_image": round(tested.seconds / len(dataset.test), 4),
        "precision": resolve_precision(method.config.precision, method.device),
    }
    report["per_class_auroc"] = _per_class_auroc(dataset, scores)
    note = getattr(method, "training_note", lambda: "")()  # what a method that tunes itself on data tuned on (ST-SSAD)
    if note:
        report["training_note"] = note
    if 1 < len(set(tested.widths)) <= MAX_SCAN_WIDTHS:
        report["per_width_auroc"] = _per_group_auroc(labels, scores, np.array(tested.widths))
    if tested.hidden["normal"]:
        counts = tested.hidden
        report["refinement"] = {
            "hidden_defect_share": round(counts["defect_hidden"] / counts["defect"], 4) if counts["defect"] else None,
            "hidden_normal_share": round(counts["normal_hidden"] / counts["normal"], 4),
        }
        for name, variant in method.ablations().items():
            try:
                variant.recalibrate(dataset)
            except SsadError as error:  # the held-out split cannot be rebuilt from this dataset
                report["refinement"][name] = {"unavailable": str(error)}
                continue
            ablated = _score_test_set(variant, dataset, progress, f"scoring test images: {name}")
            report["refinement"][name] = {
                "image_auroc": image_auroc(labels, np.array(ablated.scores)),
                "pixel_auroc": pixel_auroc(ablated.masks, ablated.maps) if ablated.masks else None,
            }
    return report


def _per_group_auroc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """AUROC within each group (an image width, say) that holds both normal and anomalous images."""
    values = {str(group): image_auroc(labels[groups == group], scores[groups == group]) for group in sorted(set(groups))}
    return {group: value for group, value in values.items() if value is not None}


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
