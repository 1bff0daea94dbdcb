"""Shared building blocks against references: Gaussian/median filters (scipy), SSIM and GMS, focal loss, Perlin noise."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from ssad.nn.filters import gaussian_blur, median_blur3
from ssad.nn.losses import focal_loss, gms_map, msgms_anomaly_map, msgms_loss, ssim
from ssad.nn.perlin import fractal_perlin_noise, perlin_noise


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


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin_noise(64, 64, 4, 2, torch.Generator().manual_seed(0))
    assert noise.shape == (64, 64) and noise.abs().max() <= 1.5 and noise.std() > 0.1
    # Lattice corners have zero noise; neighbours differ little (smooth).
    assert noise[0, 0].abs() < 1e-6 and (noise[:, 1:] - noise[:, :-1]).abs().max() < 0.3


def test_focal_loss_down_weights_easy_pixels():
    target = torch.tensor([1.0, 0.0])
    easy, hard = torch.tensor([4.0, -4.0]), torch.tensor([-1.0, 1.0])
    assert focal_loss(easy, target) < 0.01 * focal_loss(hard, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(hard, target)
    assert focal_loss(hard, target, gamma=0.0) == pytest.approx(float(bce))


def test_fractal_perlin_adds_finer_octaves():
    one = fractal_perlin_noise(64, 64, 2, 1, torch.Generator().manual_seed(4))
    assert torch.equal(one, perlin_noise(64, 64, 2, 2, torch.Generator().manual_seed(4)))
    three = fractal_perlin_noise(64, 64, 2, 3, torch.Generator().manual_seed(4))
    assert _roughness(three) > 1.3 * _roughness(one)


def _roughness(field: torch.Tensor) -> torch.Tensor:
    return (field[:, 1:] - field[:, :-1]).abs().mean()
