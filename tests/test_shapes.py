"""Images of any shape: every method trains at its training images' aspect and answers at the input's resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import as_saved, real_data, tiny_config
from ssad.data import make_synthetic_mvtec, open_dataset
from ssad.methods import METHODS
from ssad.methods.base import dataset_input_shape


@pytest.fixture(scope="module")
def tall_category(tmp_path_factory) -> Path:
    """The synthetic category with every image and mask stretched to 40 x 100 (the aspect of a KolektorSDD scan)."""
    root = make_synthetic_mvtec(tmp_path_factory.mktemp("tall"), "tall", n_train=16, n_test_per_type=2, size=64, seed=1)
    for path in root.rglob("*.png"):
        with Image.open(path) as picture:
            resample = Image.NEAREST if "ground_truth" in path.parts else Image.BICUBIC
            stretched = picture.resize((40, 100), resample)
        stretched.save(path)
    return root


@pytest.mark.parametrize("method_id", list(METHODS))
def test_method_keeps_the_aspect_of_its_training_images(method_id, tall_category, tmp_path):
    cls = METHODS[method_id]
    # 64, not less: at 80 x 32 ST-SSAD's last stride-2 convolution gets 2 columns, and oneDNN's bf16 kernel on
    # AMX returns non-finite values for a one-column output (docs/methods.md, "Precision").
    config = dataclasses.replace(tiny_config(cls), size=64, epochs=1)
    method = cls(config).fit(open_dataset(tall_category))
    assert method.config.input_shape == (96, 48)  # about 64 x 64 pixels at 40:100, sides multiples of 16
    scan = np.random.default_rng(0).integers(0, 255, (512, 205, 3), dtype=np.uint8)
    assert method.predict(scan, with_frames=False).anomaly_map.shape == (512, 205)
    square = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    assert method.predict(square, with_frames=False).anomaly_map.shape == (300, 300)
    loaded = cls.load(method.save(tmp_path / method_id))
    assert loaded.config.input_shape == (96, 48)
    np.testing.assert_array_equal(loaded.predict(scan, with_frames=False).anomaly_map, as_saved(method).predict(scan, with_frames=False).anomaly_map)


def test_saved_configs_without_an_input_shape_were_square():
    cls = METHODS["ssm"]
    assert cls.config_class.from_saved({"size": 64}).input_shape == (64, 64)


def test_kolektorsdd_input_is_not_squashed():
    dataset = open_dataset(real_data("kolektorsdd/commutator"))
    assert dataset_input_shape(dataset, 128, 16) == (208, 80)
