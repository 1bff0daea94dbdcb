"""SSM: masks, network, progressive refinement, training, save/load."""

import json

import numpy as np
import pytest
import torch
from conftest import as_saved

from ssad.data import open_dataset
from ssad.errors import WeightsError
from ssad.methods import method_class
from ssad.methods.base import held_out_split
from ssad.methods.ssm import SSM, SSMConfig
from ssad.methods.ssm.masks import complementary_masks, uncover
from ssad.methods.ssm.network import MaskedUNet
from ssad.nn.filters import gaussian_blur

TINY = dict(size=32, epochs=6, batch_size=4, base_width=4, cell_sizes=(2, 4, 8), refine_block=4, lr=3e-3)


@pytest.mark.parametrize("cell", [2, 4, 8, 16])
def test_masks_hide_every_pixel_exactly_once(cell):
    masks = complementary_masks((48, 64), cell, 3, torch.Generator().manual_seed(0))
    assert masks.shape == (3, 1, 48, 64)
    assert torch.equal((1 - masks).sum(dim=0), torch.ones(1, 48, 64))
    hidden_share = (1 - masks).mean(dim=(1, 2, 3))
    assert torch.allclose(hidden_share, torch.full((3,), 1 / 3), atol=0.1)
    # Hidden regions are whole k x k cells.
    cells = masks[:, 0].unfold(1, cell, cell).unfold(2, cell, cell)
    assert torch.equal(cells.amax(dim=(-1, -2)), cells.amin(dim=(-1, -2)))


def test_masks_are_reproducible_and_differ_between_seeds():
    a = complementary_masks((32, 32), 4, 3, torch.Generator().manual_seed(5))
    b = complementary_masks((32, 32), 4, 3, torch.Generator().manual_seed(5))
    c = complementary_masks((32, 32), 4, 3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uncover_makes_pixels_visible_everywhere():
    masks = complementary_masks((16, 16), 2, 3, torch.Generator().manual_seed(0))
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[:8] = True
    out = uncover(masks, region)
    assert torch.all(out[:, 0, :8] == 1)
    assert torch.equal(out[:, 0, 8:], masks[:, 0, 8:])


def test_network_shapes_and_range():
    net = MaskedUNet(base_width=4).eval()
    out = net(torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    assert out.abs().max() <= 1


def test_unknown_method_is_a_clear_error():
    with pytest.raises(Exception, match="unknown method 'nope'"):
        method_class("nope")
    assert method_class("SSM") is SSM and method_class("ssm") is SSM


@pytest.fixture(scope="module")
def trained(synthetic_category):
    torch.manual_seed(0)
    return SSM(SSMConfig(**TINY)).fit(open_dataset(synthetic_category))


def test_training_lowers_the_loss(trained):
    losses = trained.info["log"]["epoch_loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert trained.calibration is not None and trained.calibration.n_images >= 1


def test_refinement_frames_and_growing_uncovered_region(trained, synthetic_category):
    dataset = open_dataset(synthetic_category)
    image = dataset.test[-1].load_image()
    image_tensor = trained.load_images([dataset.test[-1].path])[0]
    with torch.inference_mode():
        rounds, _ = trained._refine(image_tensor)
    assert len(rounds) == trained.config.refine_iterations
    for before, after in zip(rounds, rounds[1:]):
        assert torch.all(after["uncovered"] >= before["uncovered"])
    result = trained.predict(image)
    assert len(result.frames) == trained.config.refine_iterations
    assert result.anomaly_map.shape == image.shape[:2]
    assert [p.kind for p in result.frames[0].panels] == ["image", "mask", "image", "heat"]
    assert result.extras["network_passes"] == 3 * 3 * trained.config.refine_iterations


def _rounds_at_threshold(trained: SSM, image: torch.Tensor, threshold: float) -> list[dict]:
    """The refinement rounds of ``image`` with the refinement threshold set to ``threshold`` for this call only."""
    saved = trained.state["refine_threshold"]
    trained.state["refine_threshold"] = threshold
    try:
        with torch.inference_mode():
            return trained._refine(image)[0]
    finally:
        trained.state["refine_threshold"] = saved


def _rounds_at_median_threshold(trained: SSM, synthetic_category) -> list[dict]:
    """The refinement rounds of the last test image with the threshold at the median of its first-round block levels,
    so that round 1 uncovers about half of it."""
    image_tensor = trained.load_images([open_dataset(synthetic_category).test[-1].path])[0]
    with torch.inference_mode():
        first = trained._refine(image_tensor, iterations=1)[0][0]
    return _rounds_at_threshold(trained, image_tensor, float(trained._block_levels(first["map"]).median()))


def test_refinement_threshold_leaves_the_set_share_of_normal_blocks_hidden(trained, synthetic_category):
    """Calibrated on held-out normals, round 1 hides ``refine_hidden_share`` of their blocks; a defect stays hidden more."""
    dataset = open_dataset(synthetic_category)
    _, held_out_paths = held_out_split(dataset, trained.config)
    with torch.inference_mode():
        held_out = [trained._refine(image, iterations=1)[0][0]["map"] for image in trained.load_images(held_out_paths)]
        hidden_normal = np.mean([1 - trained._normal_blocks(m).float().mean().item() for m in held_out])
        defective = [s for s in dataset.test if s.label == 1]
        hidden = [~trained._refine(image)[0][-1]["uncovered"] for image in trained.load_images([s.path for s in defective])]
    assert hidden_normal == pytest.approx(trained.config.refine_hidden_share, abs=0.05)
    truths = torch.stack([torch.from_numpy(s.load_mask(trained.shape)) for s in defective]).bool()
    hidden = torch.stack(hidden)
    assert hidden[truths].float().mean() > 1.5 * hidden[~truths].float().mean()


def test_uncovered_pixels_keep_their_last_inpainting(trained, synthetic_category):
    """An image judged wholly normal keeps its first-round composite and map instead of collapsing to zero error."""
    image_tensor = trained.load_images([open_dataset(synthetic_category).test[-1].path])[0]
    rounds = _rounds_at_threshold(trained, image_tensor, float("inf"))
    assert bool(rounds[-1]["uncovered"].all())
    assert rounds[0]["map_max"] > 0
    assert torch.allclose(rounds[-1]["map"], rounds[0]["map"])
    assert rounds[-1]["mse"] == pytest.approx(rounds[0]["mse"])


def test_refined_rounds_inpaint_only_what_is_still_hidden(trained, synthetic_category):
    """Pixels uncovered after round 1 keep round 1's inpainting; the pixels still hidden are inpainted again."""
    rounds = _rounds_at_median_threshold(trained, synthetic_category)
    kept = rounds[1]["uncovered"]
    assert 0 < kept.float().mean() < 1
    assert torch.equal(rounds[-1]["composite"][:, kept], rounds[0]["composite"][:, kept])
    assert not torch.allclose(rounds[-1]["composite"][:, ~kept], rounds[0]["composite"][:, ~kept])


def test_a_pixel_judged_normal_keeps_the_error_of_its_last_hidden_round(trained, synthetic_category):
    """The map is built from each pixel's error in the last round that hid it, refined rounds rescaled; not recomputed."""
    rounds = _rounds_at_median_threshold(trained, synthetic_category)
    kept = rounds[0]["error"]
    for index, refined in enumerate(rounds[1:], 1):
        scale, offset = trained.state["refine_rescale"][index - 1]
        kept = torch.where(refined["uncovered"], kept, scale * refined["error"] + offset)
        assert torch.allclose(refined["map"], gaussian_blur(kept[None, None], trained.config.smoothing_sigma)[0, 0], atol=1e-6)
    assert not torch.allclose(rounds[-1]["error"], rounds[0]["error"])  # the recomputed error moves, the kept error does not


def test_rescale_puts_refined_errors_on_the_first_rounds_scale(trained, synthetic_category):
    """On the held-out normals, the rescaled error of the pixels a refined round hides has round 1's mean and spread."""
    dataset = open_dataset(synthetic_category)
    _, held_out_paths = held_out_split(dataset, trained.config)
    scale, offset = trained.state["refine_rescale"][0]
    first, refined = [], []
    with torch.inference_mode():
        for image in trained.load_images(held_out_paths):
            rounds = trained._refine(image, iterations=2)[0]
            hidden = ~rounds[-1]["uncovered"]
            first.append(rounds[0]["error"][hidden])
            refined.append(scale * rounds[-1]["error"][hidden] + offset)
    first, refined = torch.cat(first), torch.cat(refined)
    assert len(trained.state["refine_rescale"]) == trained.config.refine_iterations - 1
    assert float(refined.mean()) == pytest.approx(float(first.mean()), rel=1e-3)
    assert float(refined.std()) == pytest.approx(float(first.std()), rel=1e-3)


def test_synthetic_defects_score_higher_than_normals(trained, synthetic_category):
    dataset = open_dataset(synthetic_category)
    scores = {0: [], 1: []}
    for sample in dataset.test:
        scores[sample.label].append(trained.predict(sample.load_image(), with_frames=False).score)
    assert np.mean(scores[1]) > np.mean(scores[0])


def test_save_load_round_trip(trained, synthetic_category, tmp_path):
    folder = trained.save(tmp_path / "w")
    loaded = SSM.load(folder)
    image = open_dataset(synthetic_category).test[0].load_image()
    a, b = as_saved(trained).predict(image), loaded.predict(image)
    assert b.score == a.score
    np.testing.assert_array_equal(b.anomaly_map, a.anomaly_map)
    # Float16 storage moves the map little; the score, standardised by this tiny model's small spread, can move more.
    np.testing.assert_allclose(trained.predict(image).anomaly_map, b.anomaly_map, atol=5e-3)
    assert loaded.calibration == trained.calibration


def test_load_rejects_flipped_byte_and_foreign_keys(trained, tmp_path):
    folder = trained.save(tmp_path / "w")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="model.safetensors: sha256"):
        SSM.load(folder)

    other = SSM(SSMConfig(**{**TINY, "base_width": 8}))
    other.calibration = trained.calibration
    other.state = trained.state
    folder = other.save(tmp_path / "other")
    description = json.loads((folder / "config.json").read_text())
    description["config"]["base_width"] = 4
    (folder / "config.json").write_text(json.dumps(description))
    with pytest.raises(WeightsError, match="do not match"):
        SSM.load(folder)


def test_evaluation_measures_what_refinement_hides_and_adds(trained, synthetic_category):
    from ssad.evaluation import evaluate

    report = evaluate(trained, open_dataset(synthetic_category))
    refinement = report["refinement"]
    assert 0 <= refinement["hidden_normal_share"] <= 1 and 0 <= refinement["hidden_defect_share"] <= 1
    one_round = refinement["one_round"]
    assert 0 <= one_round["image_auroc"] <= 1 and 0 <= one_round["pixel_auroc"] <= 1
    assert trained.config.refine_iterations == 3  # the ablation is a copy
