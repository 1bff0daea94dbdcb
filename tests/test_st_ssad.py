"""ST-SSAD: differentiable augmentations, the validation loss, training with tuning, save/load."""

import numpy as np
import pytest
import torch

from ssad.data import open_dataset
from ssad.methods import method_class
from ssad.methods.st_ssad import STSSAD, STSSADConfig
from ssad.methods.st_ssad.augment import CutDiff, Rotation, cut_diff, rotate
from ssad.methods.st_ssad.network import Detector
from ssad.methods.st_ssad.validation import mean_distance_loss

TINY = dict(
    size=64, epochs=12, batch_size=8, widths=(8, 16, 32, 64), hidden=32, embedding_dim=16, warmup_steps=4,
    tune_every=2, validation_batch=8, recorded_steps=4, thumbnail_size=16,
)


def _images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.3


def test_cut_diff_is_identity_at_zero_area_and_darkens_a_patch_otherwise():
    images = _images()
    centres = torch.tensor([[0.5, 0.5], [0.2, 0.7]])
    swap = torch.tensor([False, True])
    assert torch.allclose(cut_diff(images, 0.0, 0.5, centres, swap), images, atol=1e-6)
    out = cut_diff(images, 0.1, 0.5, centres, swap)
    assert torch.all(out <= images + 1e-7)
    assert out[0, :, 16, 16].max() < 0.05  # the bump peaks near 1 at its centre, clipped at 0
    assert torch.allclose(out[0, :, 0, 0], images[0, :, 0, 0], atol=1e-2)  # far from the centre, little change


def test_rotation_is_identity_at_zero_angle_and_turns_the_image():
    images = _images()
    assert torch.allclose(rotate(images, 0.0), images, atol=1e-5)
    bar = torch.zeros(1, 1, 33, 33)
    bar[..., 16, :] = 1  # a horizontal line turns into a vertical one
    turned = rotate(bar, torch.tensor(np.pi / 2))
    assert turned[0, 0, :, 16].mean() > 0.8 and turned[0, 0, 16, :].mean() < 0.2


@pytest.mark.parametrize("augmentation", [CutDiff((0.02, 0.15), (0.3, 1.0)), Rotation(180.0)])
def test_gradient_reaches_the_augmentation_strengths(augmentation):
    augmentation.set_strengths([0.4] * len(augmentation.names))
    out = augmentation(_images(), torch.Generator().manual_seed(1))
    (out * torch.linspace(0, 1, out.shape[-1])).sum().backward()
    assert augmentation.logits.grad is not None
    assert torch.all(torch.isfinite(augmentation.logits.grad)) and augmentation.logits.grad.abs().min() > 0


def test_strengths_map_to_the_configured_ranges():
    cut = CutDiff((0.02, 0.15), (0.3, 1.0))
    cut.set_strengths([0.0, 1.0])
    assert cut.physical() == pytest.approx({"area_ratio": 0.02, "aspect_ratio": 1.0}, abs=1e-3)
    cut.set_strengths([1.0, 0.0])
    assert cut.physical() == pytest.approx({"area_ratio": 0.15, "aspect_ratio": 0.3}, abs=1e-3)


def test_validation_loss_is_invariant_to_scale_and_shift_and_rewards_alignment():
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(20, 5, generator=generator)
    augmented = torch.randn(20, 5, generator=generator) + torch.tensor([6.0, 0, 0, 0, 0])
    aligned = torch.cat([normal[:10] + 0.1, augmented[:5] + 0.1])
    loss = mean_distance_loss(normal, augmented, aligned)
    scaled = mean_distance_loss(normal * 7.5, augmented * 7.5, aligned * 7.5)
    shifted = mean_distance_loss(normal + 3, augmented + 3, aligned + 3)
    assert scaled == pytest.approx(loss.item(), rel=1e-5) and shifted == pytest.approx(loss.item(), rel=1e-5)
    misaligned = torch.randn(15, 5, generator=generator) + torch.tensor([0, 0, 6.0, 0, 0])
    assert mean_distance_loss(normal, augmented, misaligned) > 2 * loss


def test_validation_loss_gradient_reaches_the_augmentation_through_the_detector():
    detector = Detector((4, 8, 8, 8), 16, 8).eval()
    augmentation = CutDiff((0.02, 0.15), (0.3, 1.0))
    normals, validation = _images(6), _images(6).flip(-1)
    augmented = augmentation(normals, torch.Generator().manual_seed(0))
    loss = mean_distance_loss(detector(normals)[0], detector(augmented)[0], detector(validation)[0])
    loss.backward()
    assert augmentation.logits.grad is not None and augmentation.logits.grad.abs().sum() > 0


def test_registry_and_config_errors():
    assert method_class("st-ssad") is STSSAD and method_class("ST-SSAD") is STSSAD
    with pytest.raises(Exception, match="validation must be one of"):
        STSSAD(STSSADConfig(**TINY, validation="labels"))


@pytest.fixture(scope="module")
def trained(synthetic_category):
    torch.manual_seed(0)
    return STSSAD(STSSADConfig(**TINY)).fit(open_dataset(synthetic_category))


def test_tuning_moves_the_strengths_and_records_frames(trained):
    state = trained.state
    assert state["validation_data"] == "test"
    assert len(state["candidates"]) == 4
    assert state["initial_strengths"] in [c["strengths"] for c in state["candidates"]]
    assert not np.allclose(state["tuned_strengths"], state["initial_strengths"], atol=1e-3)
    assert len(state["validation_loss"]) == trained.info["log"]["steps"] // trained.config.tune_every
    assert 2 <= len(state["tuning_frames"]) <= trained.config.recorded_steps
    assert trained.networks["scoring"].thumbnails[0].abs().sum() > 0


def test_synthetic_defects_score_higher_than_normals_with_frames(trained, synthetic_category):
    dataset = open_dataset(synthetic_category)
    scores = {0: [], 1: []}
    for sample in dataset.test:
        scores[sample.label].append(trained.predict(sample.load_image(), with_frames=False).score)
    normal, defect = np.array(scores[0]), np.array(scores[1])
    auroc = (defect[:, None] > normal[None]).mean()
    assert auroc > 0.7
    result = trained.predict(dataset.test[-1].load_image())
    assert len(result.frames) == len(trained.state["tuning_frames"]) + 1
    assert [p.kind for p in result.frames[0].panels] == ["image", "mask"]
    assert result.frames[-1].panels[-1].kind == "heat"
    assert result.anomaly_map.shape == dataset.test[-1].load_image().shape[:2]


def test_save_load_round_trip(trained, synthetic_category, tmp_path):
    folder = trained.save(tmp_path / "w")
    loaded = STSSAD.load(folder)
    image = open_dataset(synthetic_category).test[-1].load_image()
    a, b = trained.predict(image), loaded.predict(image)
    assert a.score == pytest.approx(b.score, rel=0.05, abs=0.05)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0.05, atol=0.05)
    assert loaded.calibration == trained.calibration
    assert loaded.state["tuned_parameters"] == trained.state["tuned_parameters"]
    assert len(loaded.predict(image).frames) == len(a.frames)


def test_rotation_tuned_on_held_out_normals(synthetic_category):
    config = STSSADConfig(
        **{**TINY, "epochs": 4}, augmentation="rotation", validation="held_out", candidates=((0.2,), (0.6,))
    )
    method = STSSAD(config).fit(open_dataset(synthetic_category))
    state = method.state
    assert state["validation_data"] == "held_out"
    assert [c["strengths"] for c in state["candidates"]] == [[0.2], [0.6]]
    assert state["tuned_parameters"]["angle_degrees"] != pytest.approx(state["initial_parameters"]["angle_degrees"], abs=1e-3)
    assert np.isfinite(method.predict(open_dataset(synthetic_category).test[0].load_image()).score)
