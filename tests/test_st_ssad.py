"""ST-SSAD: differentiable augmentations, the validation loss, training with tuning, save/load."""

import numpy as np
import pytest
import torch
from conftest import as_saved

from ssad.data import open_dataset
from ssad.methods import method_class
from ssad.methods.st_ssad import STSSAD, STSSADConfig
from ssad.methods.st_ssad.method import _WarmStart
from ssad.methods.st_ssad.augment import CutDiff, Rotation, cut_diff, rotate
from ssad.methods.st_ssad.network import Detector
from ssad.methods.st_ssad.pictures import BOTTOM, END, LEFT, RIGHT, SIZE, START, TOP, landscape_picture, loss_picture
from ssad.methods.st_ssad.tuning import CompassSearch, evaluate_landscape, first_and_last_sixth
from ssad.methods.st_ssad.validation import mean_distance_loss
from ssad.viz import render_frame

TINY = dict(
    size=64, epochs=12, batch_size=8, widths=(8, 16, 32, 64), hidden=32, embedding_dim=16, warmup_steps=4,
    tune_every=2, recorded_steps=4, thumbnail_size=16, candidate_steps=3,
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


def test_strengths_map_to_the_configured_ranges_on_log_scales():
    cut = CutDiff((0.001, 0.5), (0.04, 1.0))
    cut.set_strengths([0.0, 1.0])
    assert cut.physical() == pytest.approx({"area_ratio": 0.001, "aspect_ratio": 1.0}, abs=1e-3)
    cut.set_strengths([1.0, 0.0])
    assert cut.physical() == pytest.approx({"area_ratio": 0.5, "aspect_ratio": 0.04}, abs=1e-3)
    assert cut.bounds() == {"area_ratio": [0.001, 0.5], "aspect_ratio": [0.04, 1.0]}
    axes = cut.physical_axes(((0.0, 0.5, 1.0), (0.0, 0.5, 1.0)))
    assert axes["area_ratio"] == pytest.approx([0.001, 0.5**0.5 * 0.001**0.5, 0.5], rel=1e-3)  # the middle is the geometric mean
    assert axes["aspect_ratio"] == pytest.approx([0.04, 0.2, 1.0], rel=1e-3)
    assert Rotation(90.0).bounds() == {"angle_degrees": [0.0, 90.0]}


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


def test_tuning_state_has_params_bounds_losses_and_the_landscape(trained):
    tuning = trained.state["tuning"]
    cfg = trained.config
    assert tuning["augmentation"] == "cutdiff" and tuning["validation_data"] == "test"
    assert tuning["reference_normals"] == "held_out"
    assert set(tuning["params"]) == set(tuning["bounds"]) == {"area_ratio", "aspect_ratio"}
    for unit, (low, high) in tuning["bounds"].items():
        assert low <= tuning["params"][unit] <= high
    n_polls = trained.info["log"]["steps"] // cfg.tune_every
    assert len(tuning["losses"]) == len(tuning["trajectory"]) == n_polls + 1 == len(tuning["poll_steps"]) + 1  # start, each poll
    assert (tuning["loss_first"], tuning["loss_last"]) == pytest.approx(first_and_last_sixth(tuning["losses"]), abs=1e-4)
    assert tuning["trajectory"][0] == pytest.approx([cfg.initial_strength] * 2, abs=1e-4)
    assert all(later <= earlier for earlier, later in zip(tuning["losses"], tuning["losses"][1:]))
    assert np.asarray(tuning["trained_there_grid"]["loss"]).shape == (cfg.coarse_points, cfg.coarse_points)
    grid = tuning["grid"]
    assert np.asarray(grid["loss"]).shape == (cfg.grid_points, cfg.grid_points) and np.isfinite(grid["loss"]).all()
    assert grid["names"] == ["area", "aspect"] and len(grid["strengths"][0]) == cfg.grid_points
    assert grid["physical"]["area_ratio"] == pytest.approx(list(np.geomspace(*cfg.area_range, cfg.grid_points)), rel=1e-3)
    assert tuning["trained_there_grid"]["strengths"][0] == pytest.approx([(i + 0.5) / cfg.coarse_points for i in range(cfg.coarse_points)])
    assert 2 <= len(tuning["recorded"]) <= cfg.recorded_steps
    assert trained.training_note().startswith("cutdiff tuned on the unlabelled test images (transductive): area ratio ")
    assert trained.networks["scoring"].thumbnails[0].abs().sum() > 0


def test_the_trained_there_loss_trains_a_copy_as_the_detector_would():
    """The functional copy trains as the detector's optimiser would, leaves the detector alone, and repeats exactly."""
    torch.manual_seed(0)
    method = STSSAD(STSSADConfig(**TINY))
    cfg, total = method.config, 20
    train = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    validation = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    optimizer = method._detector_optimizer()
    for step in range(2):
        method._detector_step(train, optimizer, step, total, torch.Generator().manual_seed(step))
    warm = _WarmStart.of(method.networks["detector"], optimizer)
    loss_images = method._loss_images(train[:6], validation)
    method.networks["augmentation"].set_strengths([0.4, 0.6])

    trained_there = method._trained_there_loss(warm, train, loss_images, total)
    detector_state = {name: value.clone() for name, value in method.networks["detector"].state_dict().items()}
    assert method._trained_there_loss(warm, train, loss_images, total) == trained_there
    assert all(torch.equal(value, detector_state[name]) for name, value in method.networks["detector"].state_dict().items())
    batches = torch.Generator().manual_seed(cfg.seed + 4)
    for step in range(cfg.candidate_steps):
        method._detector_step(train, optimizer, cfg.warmup_steps + step, total, batches)
    assert trained_there == pytest.approx(method._loss_through(method._embed, loss_images).item(), rel=1e-4)
    method.networks["augmentation"].set_strengths([0.9, 0.1])
    assert method._trained_there_loss(warm, train, loss_images, total) != pytest.approx(trained_there, rel=1e-3)


def test_the_compass_search_reaches_an_interior_minimum_of_a_rough_stand_in_loss():
    """From the middle, polls on a loss with its minimum at strengths (0.3, 0.65) and small jumps everywhere (as the
    trained-there loss has): the loss falls at every move and the search ends near the minimum."""
    augmentation = CutDiff((0.02, 0.15), (0.3, 1.0))
    target = np.array([0.3, 0.65])
    readings = []

    def loss() -> float:
        strengths = augmentation.strengths.detach().numpy().astype(np.float64)
        readings.append(strengths)
        return float(((strengths - target) ** 2).sum() + 0.002 * np.sin(300 * strengths).sum())

    landscape = evaluate_landscape(augmentation, loss, 4, centred=True)
    assert landscape.axes[0] == (0.125, 0.375, 0.625, 0.875)
    augmentation.set_strengths([0.5, 0.5])
    search = CompassSearch(augmentation, loss, step=0.25)
    search.remember(landscape)
    n_readings = len(readings)
    for _ in range(20):
        search.poll()
    assert search.trajectory[0] == pytest.approx([0.5, 0.5], abs=1e-4) and len(search.trajectory) == len(search.losses) == 21
    assert all(later <= earlier for earlier, later in zip(search.losses, search.losses[1:]))
    assert search.losses[-1] < search.losses[0] and search.losses[-1] < landscape.losses.min()
    assert np.abs(np.array(search.strengths()) - target).max() < 0.04
    assert min(search.strengths()) > 0.05 and max(search.strengths()) < 0.95  # at least 5 % of the range from both bounds
    assert len(readings) - n_readings < 1 + 20 * 4  # a point already read is not read again
    assert search.steps[0] == 0.25 and search.steps[-1] == 0.25 / 16  # the step stops shrinking at 1/16


def test_landscape_picture_draws_axes_path_start_and_end():
    grid = {"loss": np.add.outer(np.linspace(0, 1, 7), np.linspace(1, 0, 7)).tolist(),
            "physical": {"area_ratio": list(np.linspace(0.02, 0.15, 7)), "aspect_ratio": list(np.geomspace(0.3, 1, 7))}}
    picture = landscape_picture(grid, [[0.1, 0.2], [0.5, 0.5], [0.8, 0.9]])
    assert picture.shape == (SIZE, SIZE, 3)
    pixels = (picture * 255).round().astype(int)
    assert (np.abs(pixels - START).sum(-1) < 30).any() and (np.abs(pixels - END).sum(-1) < 30).any()
    assert (pixels[-40:, 60:-60] < 100).any() and (pixels[40:-60, :30] < 100).any()  # x and y labels in the margins
    curve = loss_picture(list(np.linspace(2, 1, 15)))
    assert curve.shape == (SIZE, SIZE, 3) and (curve[-40:, 60:-60] < 0.4).any()
    rows, columns = np.nonzero(np.abs(curve * 255 - np.array([30, 90, 200])).sum(-1) < 30)
    assert rows[columns < LEFT + 10].mean() < rows[columns > SIZE - RIGHT - 10].mean()  # a falling loss falls on the picture
    assert landscape_picture({**grid, "loss": grid["loss"][0], "physical": {"angle_degrees": list(range(7))}}, [[0.2], [0.7]]).shape == (SIZE, SIZE, 3)
    centred = {"loss": np.ones((4, 4)).tolist(), "strengths": [[0.125, 0.375, 0.625, 0.875]] * 2,
               "physical": {"area_ratio": [0.002, 0.01, 0.05, 0.2], "aspect_ratio": [0.05, 0.1, 0.3, 0.6]}}
    ring = np.abs((landscape_picture(centred, [[0.125, 0.125]]) * 255).round() - START).sum(-1) < 30
    rows, columns = np.nonzero(ring)
    width, height = SIZE - LEFT - RIGHT, SIZE - TOP - BOTTOM
    assert abs(columns.mean() - (LEFT + width / 8)) < 3 and abs(rows.mean() - (TOP + height * 7 / 8)) < 3  # the first cell's centre


def test_synthetic_defects_score_higher_than_normals_with_frames(trained, synthetic_category):
    dataset = open_dataset(synthetic_category)
    scores = {0: [], 1: []}
    for sample in dataset.test:
        scores[sample.label].append(trained.predict(sample.load_image(), with_frames=False).score)
    normal, defect = np.array(scores[0]), np.array(scores[1])
    auroc = (defect[:, None] > normal[None]).mean()
    assert auroc > 0.7
    result = trained.predict(dataset.test[-1].load_image())
    assert len(result.frames) == len(trained.state["tuning"]["recorded"]) + 3
    assert [p.title for p in result.frames[0].panels] == ["cutdiff at this step", "loss if trained there, dark=low"]
    assert result.frames[0].caption.startswith("Training step")
    assert [p.title for p in result.frames[-3].panels] == ["loss if trained there", "validation loss at each poll"]
    assert [p.title for p in result.frames[-2].panels] == ["trained detector, dark=low"]
    assert result.frames[-1].panels[-1].kind == "heat"
    assert all(render_frame(frame, result.calibration, 144).shape[1] <= 390 for frame in result.frames)  # phone width
    assert result.anomaly_map.shape == dataset.test[-1].load_image().shape[:2]


def test_save_load_round_trip(trained, synthetic_category, tmp_path):
    folder = trained.save(tmp_path / "w")
    loaded = STSSAD.load(folder)
    image = open_dataset(synthetic_category).test[-1].load_image()
    a, b = as_saved(trained).predict(image), loaded.predict(image)
    assert b.score == a.score
    np.testing.assert_array_equal(b.anomaly_map, a.anomaly_map)
    np.testing.assert_allclose(trained.predict(image).anomaly_map, b.anomaly_map, rtol=0.1)
    assert loaded.calibration == trained.calibration
    assert loaded.state["tuning"] == trained.state["tuning"]
    assert len(loaded.predict(image).frames) == len(a.frames)


def test_rotation_tuned_on_held_out_normals(synthetic_category):
    config = STSSADConfig(**{**TINY, "epochs": 4}, augmentation="rotation", validation="held_out")
    method = STSSAD(config).fit(open_dataset(synthetic_category))
    tuning = method.state["tuning"]
    assert tuning["validation_data"] == "held_out" and tuning["reference_normals"] == "train"
    assert tuning["augmentation"] == "rotation" and tuning["bounds"] == {"angle_degrees": [0.0, 180.0]}
    assert np.asarray(tuning["grid"]["loss"]).shape == (config.grid_points,)
    losses = tuning["losses"]
    assert len(losses) >= 2 and all(later <= earlier for earlier, later in zip(losses, losses[1:]))  # it polled; never rose
    landscape = np.asarray(tuning["trained_there_grid"]["loss"])
    assert landscape.shape == (config.coarse_points,) and np.ptp(landscape) > 0  # the angle moves the loss the search reads
    assert 0.0 <= tuning["params"]["angle_degrees"] <= 180.0
    assert np.isfinite(method.predict(open_dataset(synthetic_category).test[0].load_image()).score)


def test_jittered_copies_of_the_normals_join_the_gaussians_samples(synthetic_category, monkeypatch):
    from ssad.methods.st_ssad import method as st_ssad_method

    sample_counts = []
    real_fit = st_ssad_method.fit_gaussian
    monkeypatch.setattr(st_ssad_method, "fit_gaussian", lambda samples: sample_counts.append(len(samples)) or real_fit(samples))
    config = STSSADConfig(**{**TINY, "epochs": 1, "coarse_points": 2, "grid_points": 2}, gaussian_jitter_copies=2)
    method = STSSAD(config).fit(open_dataset(synthetic_category))
    n_samples = 3 * method.info["n_train"]
    rows, columns = method.networks["scoring"].map_mean.shape[:2]
    assert sample_counts == [n_samples, n_samples * rows * columns]  # pooled features, then one per map position
    assert np.isfinite(method.predict(open_dataset(synthetic_category).test[0].load_image()).score)
