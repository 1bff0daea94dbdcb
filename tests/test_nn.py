"""Shared building blocks against references: Gaussian/median filters (scipy), SSIM and GMS properties."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from ssad.nn.filters import gaussian_blur, median_blur3
from ssad.nn.losses import gms_map, msgms_anomaly_map, msgms_loss, ssim


@pytest.mark.parametrize("sigma", [1.0, 3.0, 7.0])
def test_gaussian_blur_matches_scipy(sigma):
    image = np.random.default_rng(0).random((64, 80)).astype(np.float32)
    ours = gaussian_blur(torch.from_numpy(image)[None, None], sigma)[0, 0].numpy()
    reference = ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=4.0)
    # scipy's "reflect" repeats the edge pixel; torch's pads without it: differences stay at the border.
    inner = slice(int(4 * sigma) + 1, -int(4 * sigma) - 1)
    np.testing.assert_allclose(ours[inner, inner], reference[inner, inner], atol=1e-5)
    assert abs(ours.mean() - image.mean()) < 0.01


def test_median_blur_matches_scipy():
    image = np.random.default_rng(1).random((20, 24)).astype(np.float32)
    ours = median_blur3(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours[1:-1, 1:-1], ndimage.median_filter(image, 3)[1:-1, 1:-1])


def test_similarities_of_identical_images():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(gms_map(x, x), torch.ones(2, 1, 32, 32))
    assert msgms_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert msgms_anomaly_map(x, x).abs().max().item() < 1e-6


def test_gms_map_is_high_where_images_differ():
    x = torch.rand(1, 3, 32, 32)
    y = x.clone()
    y[..., 8:16, 8:16] = torch.rand(1, 3, 8, 8)
    anomaly = msgms_anomaly_map(x, y)[0, 0]
    assert anomaly[8:16, 8:16].mean() > 5 * anomaly[24:, 24:].mean()
    assert anomaly.min() >= 0 and anomaly.max() < 1
