"""Evaluation metrics: image AUROC and F1-max, pixel AUROC and AP, and AUPRO up to an FPR of 0.3.

ROC and precision-recall curves come from scikit-learn. AUPRO (Bergmann et al., MVTec AD) is computed
exactly from one sort of all pixels: each anomalous pixel adds ``1 / (area of its region x number of
regions)`` to the per-region overlap (PRO), each normal pixel ``1 / number of normal pixels`` to the FPR.
The curve is integrated up to ``fpr_limit`` (interpolated at the limit) and divided by it, so a perfect
map scores 1 and no value can exceed 1.

Pixel metrics take masks and maps as one [N, H, W] stack or as a list of per-image arrays of any shapes
(test images of KolektorSDD and Magnetic-tile differ in size), every pixel counting once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

AUPRO_FPR_LIMIT = 0.3

PixelArrays = np.ndarray | Sequence[np.ndarray]
"""[N, H, W] or N arrays [H_i, W_i]: one mask or map per image."""


def _all_pixels(arrays: PixelArrays, dtype: type = np.float64) -> np.ndarray:
    """Every pixel of every image, concatenated in image order."""
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays]) if len(arrays) else np.zeros(0, dtype)


def _two_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and labels.min() != labels.max()


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC of image scores; None when the labels hold only one class."""
    labels = np.asarray(labels).astype(bool)
    return float(roc_auc_score(labels, scores)) if _two_classes(labels) else None


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The best F1 over all thresholds of the scores; None when there is no anomalous sample."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def pixel_auroc(masks: PixelArrays, maps: PixelArrays) -> float | None:
    """ROC AUC over all pixels of all images; None without both normal and anomalous pixels."""
    truth = _all_pixels(masks, bool)
    return float(roc_auc_score(truth, _all_pixels(maps))) if _two_classes(truth) else None


def pixel_ap(masks: PixelArrays, maps: PixelArrays) -> float | None:
    """Average precision over all pixels; None without both normal and anomalous pixels."""
    truth = _all_pixels(masks, bool)
    return float(average_precision_score(truth, _all_pixels(maps))) if _two_classes(truth) else None


def pro_curve(masks: PixelArrays, maps: PixelArrays) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from the highest score down, both starting at 0."""
    per_image, n_regions = [], 0
    for mask in masks:  # connected components are per image
        labelled, count = ndimage.label(np.asarray(mask, dtype=bool))
        per_image.append(np.where(labelled > 0, labelled + n_regions, 0).ravel())
        n_regions += count
    regions = np.concatenate(per_image) if per_image else np.zeros(0, np.int64)
    scores = _all_pixels(maps)
    region_sizes = np.bincount(regions, minlength=n_regions + 1)
    n_normal = int((regions == 0).sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("AUPRO needs both normal pixels and at least one anomalous region")
    order = np.argsort(-scores, kind="stable")
    flat_regions = regions[order]
    in_region = flat_regions > 0
    pro_step = np.where(in_region, 1.0 / (region_sizes[flat_regions] * n_regions), 0.0)
    fpr_step = np.where(in_region, 0.0, 1.0 / n_normal)
    sorted_scores = scores[order]
    # The curve is defined at thresholds, so only the last pixel of each group of equal scores counts.
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    fpr = np.r_[0.0, np.cumsum(fpr_step)[last_of_tie]]
    pro = np.r_[0.0, np.cumsum(pro_step)[last_of_tie]]
    return np.minimum(fpr, 1.0), np.minimum(pro, 1.0)


def aupro(masks: PixelArrays, maps: PixelArrays, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
    """Normalised area under the PRO curve for FPR in [0, ``fpr_limit``]; None without anomalous regions."""
    truth = _all_pixels(masks, bool)
    if not truth.any() or truth.all():
        return None
    fpr, pro = pro_curve(masks, maps)
    end = np.searchsorted(fpr, fpr_limit, side="right")
    fpr_kept, pro_kept = fpr[:end], pro[:end]
    if end < len(fpr) and fpr_kept[-1] < fpr_limit:
        # Interpolate PRO at the limit between the last point below it and the first above.
        t = (fpr_limit - fpr[end - 1]) / (fpr[end] - fpr[end - 1])
        fpr_kept = np.r_[fpr_kept, fpr_limit]
        pro_kept = np.r_[pro_kept, pro[end - 1] + t * (pro[end] - pro[end - 1])]
    return float(np.trapezoid(pro_kept, fpr_kept) / fpr_limit)


def evaluate_scores(
    labels: np.ndarray, scores: np.ndarray, masks: PixelArrays | None = None, maps: PixelArrays | None = None
) -> dict[str, float | None]:
    """The contract's metrics; pixel metrics are None without masks."""
    has_pixels = masks is not None and maps is not None
    return {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps) if has_pixels else None,
        "pixel_ap": pixel_ap(masks, maps) if has_pixels else None,
        "aupro": aupro(masks, maps) if has_pixels else None,
        "image_f1_max": f1_max(labels, scores),
    }
