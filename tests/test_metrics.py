"""Metrics against scikit-learn and against slow, obviously correct references on small cases."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

from ssad.metrics import aupro, evaluate_scores, f1_max, image_auroc, pixel_ap, pixel_auroc, pro_curve


def slow_auroc(labels, scores):
    """Probability that a random anomalous sample outscores a random normal one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def slow_aupro(masks, maps, limit=0.3):
    """PRO and FPR at every threshold by brute force, then the trapezoid up to ``limit``, interpolated."""
    regions = [(i, ndimage.label(m)[0] == r) for i, m in enumerate(masks) for r in range(1, ndimage.label(m)[1] + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        predicted = maps >= t
        fpr = (predicted & normal).sum() / normal.sum()
        pro = np.mean([(predicted[i] & region).sum() / region.sum() for i, region in regions])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    grid_fpr = np.r_[fpr[fpr <= limit], limit] if fpr.max() > limit else fpr[fpr <= limit]
    grid_pro = np.interp(grid_fpr, fpr, pro)
    return np.trapezoid(grid_pro, grid_fpr) / limit


def random_case(seed, n=3, size=12):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    masks[0, 2:5, 2:6] = True
    masks[0, 8:10, 8:11] = True
    masks[1, 4:9, 3:5] = True
    maps = rng.random((n, size, size)) + 0.6 * masks
    return masks, np.round(maps, 2)  # rounding makes ties, which the fast curve must handle


@pytest.mark.parametrize("seed", range(4))
def test_image_and_pixel_auroc_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40) + 0.4 * labels, 1)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert image_auroc(labels, scores) == pytest.approx(slow_auroc(labels, scores))
    masks, maps = random_case(seed)
    assert pixel_auroc(masks, maps) == pytest.approx(slow_auroc(masks.ravel().astype(int), maps.ravel()))


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_brute_force_reference(seed):
    masks, maps = random_case(seed)
    assert aupro(masks, maps) == pytest.approx(slow_aupro(masks, maps), abs=1e-9)


def test_aupro_bounds_perfect_and_worst_maps():
    masks, _ = random_case(0)
    perfect = masks.astype(float)
    assert aupro(masks, perfect) == pytest.approx(1.0)
    assert aupro(masks, 1.0 - perfect) == pytest.approx(0.0)
    for seed in range(10):
        value = aupro(masks, np.random.default_rng(seed).random(masks.shape))
        assert 0.0 <= value <= 1.0


def test_pro_curve_is_monotone_and_ends_at_one():
    masks, maps = random_case(1)
    fpr, pro = pro_curve(masks, maps)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)


def test_f1_max_is_the_best_threshold():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 30)
    scores = rng.random(30) + 0.3 * labels
    best = max(f1_score(labels, scores >= t) for t in scores)
    assert f1_max(labels, scores) == pytest.approx(best)


def test_degenerate_inputs_give_none_not_nonsense():
    assert image_auroc(np.zeros(5), np.arange(5)) is None
    assert f1_max(np.zeros(5), np.arange(5)) is None
    empty = np.zeros((2, 4, 4), bool)
    assert pixel_auroc(empty, np.random.rand(2, 4, 4)) is None
    assert pixel_ap(empty, np.random.rand(2, 4, 4)) is None
    assert aupro(empty, np.random.rand(2, 4, 4)) is None
    report = evaluate_scores(np.array([0, 1]), np.array([0.1, 0.9]))
    assert report["image_auroc"] == 1.0 and report["pixel_auroc"] is None and report["aupro"] is None


def test_pixel_metrics_take_images_of_different_sizes():
    rng = np.random.default_rng(4)
    masks = [rng.random((20, 9)) > 0.8, rng.random((20, 11)) > 0.9, np.zeros((16, 16), dtype=bool)]
    maps = [mask * 0.5 + rng.random(mask.shape) for mask in masks]
    # The same pixels laid out as one image give the same figures, except AUPRO, whose regions are per image.
    one_image = np.concatenate([m.ravel() for m in masks])[None], np.concatenate([m.ravel() for m in maps])[None]
    assert pixel_auroc(masks, maps) == pytest.approx(pixel_auroc(*one_image))
    assert pixel_ap(masks, maps) == pytest.approx(pixel_ap(*one_image))
    assert 0 < aupro(masks, maps) <= 1
    padded_masks = np.zeros((3, 20, 16), dtype=bool)
    padded_maps = np.full((3, 20, 16), -1.0)  # below every real score: padding only adds normal pixels ranked last
    for i, (mask, values) in enumerate(zip(masks, maps)):
        padded_masks[i, : mask.shape[0], : mask.shape[1]] = mask
        padded_maps[i, : mask.shape[0], : mask.shape[1]] = values
    assert pixel_auroc(padded_masks, padded_maps) > pixel_auroc(masks, maps)  # the stack form still works
