"""SGSF: saliency, saliency-guided masks, forging, contrast-set retrieval, training, frames, save/load."""

import numpy as np
import pytest
import torch
from conftest import as_saved

from ssad.data import open_dataset
from ssad.errors import SsadError
from ssad.methods import method_class
from ssad.methods.sgsf import SGSF, SGSFConfig, forged_examples
from ssad.methods.sgsf.forge import forge, procedural_texture, saliency_perlin_mask, saliency_stroke_mask
from ssad.methods.sgsf.guidance import GuidanceBank, farthest_point_order, retrieval_features
from ssad.methods.sgsf.network import GuidedSegmentationNet, ReconstructionNet
from ssad.methods.sgsf.saliency import otsu_thresholds, salient_regions, saliency_maps

TINY = dict(
    size=32, epochs=30, recon_epochs=3, batch_size=8, lr=3e-3, widths=(8, 16, 16), perlin_max_exponent=2,
    min_mask_pixels=4, guidance_bank_size=6, retrieval_size=8, score_filter=3,
)


def disc_image(size: int = 64) -> torch.Tensor:
    """A bright textured disc on a plain dark background: an "object" image."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt() < size * 0.3
    texture = 0.6 + 0.2 * torch.sin(xx / 2.0) * torch.cos(yy / 3.0)
    return torch.where(disc, texture, torch.full_like(texture, 0.1)).expand(3, size, size).clone()


def test_otsu_separates_two_modes():
    values = torch.cat([torch.full((100,), 0.2), torch.full((50,), 0.8)])[None]
    assert 0.2 < float(otsu_thresholds(values)) < 0.8


@pytest.mark.parametrize("mode", ["combined", "spectral_residual", "contrast"])
def test_saliency_marks_the_object(mode):
    image = disc_image()[None]
    saliency = saliency_maps(image, mode)
    assert saliency.shape == (1, 1, 64, 64) and 0 <= saliency.min() and saliency.max() <= 1
    region = salient_regions(saliency)[0, 0]
    inside = ((torch.arange(64)[:, None] - 32) ** 2 + (torch.arange(64)[None] - 32) ** 2).sqrt() < 64 * 0.36
    assert region.any() and (region & ~inside).sum() <= 0.02 * region.sum()
    assert torch.equal(salient_regions(saliency_maps(image, "uniform")), torch.ones(1, 1, 64, 64, dtype=torch.bool))


def test_masks_fall_inside_the_salient_region():
    config = SGSFConfig(size=64, perlin_max_exponent=3)
    image = disc_image()[None]
    saliency = saliency_maps(image)
    region = salient_regions(saliency)
    generator = torch.Generator().manual_seed(0)
    masks = torch.stack([saliency_perlin_mask(saliency[0], region[0], config, generator) for _ in range(20)])
    assert torch.all(masks.flatten(1).sum(dim=1) >= config.min_mask_pixels)
    assert torch.all(masks[:, ~region[0]] == 0)
    # Different draws give different masks.
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 15


def test_stroke_masks_are_thin_curves_inside_the_salient_region():
    config = SGSFConfig(size=64, stroke_length_range=(0.3, 0.5), stroke_width_range=(1.0, 2.0))
    image = disc_image()[None]
    saliency = saliency_maps(image)
    region = salient_regions(saliency)
    generator = torch.Generator().manual_seed(5)
    masks = torch.stack([saliency_stroke_mask(saliency[0], region[0], config, generator) for _ in range(20)])  # never None here
    assert torch.all(masks[:, ~region[0]] == 0) and torch.all(masks.flatten(1).sum(dim=1) >= config.min_mask_pixels)
    rows, columns = (masks[:, 0].amax(dim=d) for d in (2, 1))
    extent = torch.maximum(rows.sum(dim=1), columns.sum(dim=1))  # the stroke's length along its longer axis
    thickness = masks.flatten(1).sum(dim=1) / extent
    assert torch.all(extent >= 8) and torch.all(thickness <= 3)


def test_stroke_fraction_chooses_the_mask_family():
    images = torch.stack([disc_image(), disc_image() * 0.8])
    saliency = saliency_maps(images)
    regions = salient_regions(saliency)
    areas = {}
    for fraction in (0.0, 1.0):
        config = SGSFConfig(size=64, perlin_max_exponent=2, stroke_fraction=fraction, stroke_width_range=(1.0, 1.5))
        generator = torch.Generator().manual_seed(6)
        areas[fraction] = torch.stack([forge(images, 0, saliency[0], regions[0], config, generator)[1].sum() for _ in range(10)])
    assert areas[1.0].median() < areas[0.0].median() / 2  # strokes cover far less than Perlin blobs


def test_forged_images_differ_only_inside_the_mask():
    config = SGSFConfig(size=64, perlin_max_exponent=3)
    images = torch.stack([disc_image(), disc_image().flip(-1) * 0.9, disc_image() * 0.8])
    saliency = saliency_maps(images)
    regions = salient_regions(saliency)
    generator = torch.Generator().manual_seed(1)
    for _ in range(12):
        forged, mask = forge(images, 0, saliency[0], regions[0], config, generator)
        changed = (forged - images[0]).abs().amax(dim=0) > 0
        assert torch.all(mask[0][changed] == 1)
        assert changed.any() and 0 <= forged.min() and forged.max() <= 1


def test_forgeries_keep_the_colour_space_of_their_image():
    """A grey image gets grey forgeries; a colour image gets coloured ones."""
    config = SGSFConfig(size=64, perlin_max_exponent=3)
    grey = torch.stack([disc_image(), disc_image().flip(-1) * 0.9])
    colour = grey * torch.tensor([1.0, 0.7, 0.4])[None, :, None, None]
    for images, expect_grey in ((grey, True), (colour, False)):
        saliency = saliency_maps(images)
        regions = salient_regions(saliency)
        generator = torch.Generator().manual_seed(4)
        forged = torch.stack([forge(images, 0, saliency[0], regions[0], config, generator)[0] for _ in range(12)])
        channel_spread = forged.amax(dim=1) - forged.amin(dim=1)
        assert bool(channel_spread.max() < 1e-6) == expect_grey


@pytest.mark.parametrize("kind", ["perlin_colour", "stripes", "checkerboard"])
def test_procedural_textures_vary(kind):
    texture = procedural_texture(kind, (32, 32), torch.Generator().manual_seed(2))
    assert texture.shape == (3, 32, 32) and 0 <= texture.min() and texture.max() <= 1 and texture.std() > 0.01


def test_contrast_set_retrieval_returns_the_nearest_normals():
    generator = torch.Generator().manual_seed(3)
    bank_images = torch.rand(10, 3, 32, 32, generator=generator)
    bank = GuidanceBank(10, (32, 32), 8)
    bank.fill(bank_images)
    query = bank.pixels(torch.tensor([7])) + 0.02 * torch.randn(1, 3, 32, 32, generator=generator)
    slots, similarity = bank.contrast_sets(query, 4)
    features = retrieval_features(bank.pixels(), 8) @ retrieval_features(query, 8).T
    assert int(slots[0, 0]) == 7
    assert set(slots[0].tolist()) == set(features[:, 0].topk(4).indices.tolist())
    assert torch.all(similarity[0, :-1] >= similarity[0, 1:])
    excluded = torch.zeros(1, 10, dtype=torch.bool)
    excluded[0, 7] = True
    assert 7 not in bank.contrast_sets(query, 4, excluded)[0][0].tolist()


def test_farthest_point_order_spreads_and_repeats():
    features = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    order = farthest_point_order(features, 6).tolist()
    assert sorted(order[:4]) == [0, 1, 2, 3] and order[4:] == order[:2]


def test_networks_shapes():
    widths = (8, 16, 16)
    reconstruction, guidance = ReconstructionNet(widths)(torch.rand(2, 3, 32, 32))
    assert reconstruction.shape == (2, 3, 32, 32) and [g.shape[-1] for g in guidance] == [16, 8, 4]
    logits = GuidedSegmentationNet(widths)(torch.rand(2, 3, 32, 32), guidance)
    assert [level.shape[-1] for level in logits] == [4, 8, 16]


def test_forged_examples_for_a_category(synthetic_category):
    examples = forged_examples(synthetic_category, n=3, config=SGSFConfig(size=32, perlin_max_exponent=2, min_mask_pixels=4))
    assert len(examples) == 3
    for image, mask in examples:
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and mask.sum() >= 4


@pytest.fixture(scope="module")
def trained(synthetic_category):
    torch.manual_seed(0)
    return SGSF(SGSFConfig(**TINY)).fit(open_dataset(synthetic_category))


def test_registered_and_config_checked():
    assert method_class("sgsf") is SGSF and method_class("SGSF") is SGSF
    with pytest.raises(SsadError, match="saliency 'fancy'"):
        SGSFConfig(saliency="fancy")


def test_training_lowers_the_losses(trained):
    log = trained.info["log"]
    assert log["reconstruction_epoch_loss"][-1] < 0.8 * log["reconstruction_epoch_loss"][0]
    assert log["segmentation_epoch_loss"][-1] < 0.8 * log["segmentation_epoch_loss"][0]
    assert trained.calibration is not None


def test_synthetic_defects_are_separated_and_localised(trained, synthetic_category):
    dataset = open_dataset(synthetic_category)
    scores = {0: [], 1: []}
    inside, outside = [], []
    for sample in dataset.test:
        result = trained.predict(sample.load_image(), with_frames=False)
        scores[sample.label].append(result.score)
        if sample.label:
            mask = sample.load_mask(result.anomaly_map.shape)
            inside.append(result.anomaly_map[mask].mean())
            outside.append(result.anomaly_map[~mask].mean())
    assert np.mean(scores[1]) > np.mean(scores[0])
    assert np.mean(inside) > np.mean(outside)


def test_frames_show_saliency_guidance_and_each_decoder_scale(trained, synthetic_category):
    image = open_dataset(synthetic_category).test[-1].load_image()
    result = trained.predict(image)
    n_levels = len(TINY["widths"])
    assert len(result.frames) == 2 + n_levels
    assert [p.kind for p in result.frames[0].panels] == ["image", "mask", "mask"]
    assert len(result.frames[1].panels) == 1 + trained.config.contrast_set_size
    assert all(frame.panels[-1].kind == "heat" for frame in result.frames[2:])
    assert result.anomaly_map.shape == image.shape[:2]
    assert result.extras["guidance"].shape == (32, 32, 3)


def test_save_load_round_trip(trained, synthetic_category, tmp_path):
    folder = trained.save(tmp_path / "w")
    loaded = SGSF.load(folder)
    assert torch.equal(loaded.networks["bank"].images, trained.networks["bank"].images)
    image = open_dataset(synthetic_category).test[0].load_image()
    a, b = as_saved(trained).predict(image), loaded.predict(image)
    assert b.score == a.score
    np.testing.assert_array_equal(b.anomaly_map, a.anomaly_map)
    np.testing.assert_allclose(trained.predict(image).anomaly_map, b.anomaly_map, atol=0.02)
    assert loaded.calibration == trained.calibration
