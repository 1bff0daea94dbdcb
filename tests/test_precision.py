"""Precision: bf16 only where the hardware is fast at it, and the same answers in either precision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_config

from ssad.data import load_image
from ssad.errors import DataError, SsadError
from ssad.methods import METHODS
from ssad.precision import fast_bf16, resolve_precision
from ssad.result import Calibration


def test_auto_means_bf16_only_where_it_is_fast(monkeypatch):
    assert resolve_precision("auto", "cpu") == ("bf16" if fast_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(SsadError, match="precision 'fp8' is not one of"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("cls", METHODS.values(), ids=lambda cls: cls.id)
def test_an_unknown_precision_fails_when_the_model_is_built(cls):
    with pytest.raises(SsadError, match="precision"):
        cls(dataclasses.replace(tiny_config(cls), precision="half"))


@pytest.mark.parametrize("cls", METHODS.values(), ids=lambda cls: cls.id)
def test_bf16_and_fp32_give_nearly_the_same_answer(cls):
    """On the committed bottle models: a tiny test model's score, standardised by a tiny spread, is too fragile to compare."""
    fp32 = cls.load(REPO_ROOT / "weights" / cls.id / "mvtec" / "bottle")
    fp32.config = dataclasses.replace(fp32.config, precision="fp32")
    bf16 = cls.load(REPO_ROOT / "weights" / cls.id / "mvtec" / "bottle")
    bf16.config = dataclasses.replace(bf16.config, precision="bf16")
    for name in ("good_000.png", "broken_large_000.png"):
        path = REPO_ROOT / "examples" / "mvtec" / "bottle" / name
        a, b = fp32.predict(path), bf16.predict(path)  # with frames: pictures must come out as fp32 arrays
        assert b.anomaly_map.dtype == np.float32 and np.isfinite(b.anomaly_map).all()
        assert np.corrcoef(a.anomaly_map.ravel(), b.anomaly_map.ravel())[0, 1] > 0.98
        assert b.score == pytest.approx(a.score, rel=0.05, abs=0.05)
        assert all(panel.array.dtype != object for frame in b.frames for panel in frame.panels)


def test_the_pixel_threshold_stays_within_what_the_map_reaches():
    maps = np.zeros((21, 8, 8))
    maps[:, 0, 0] = np.linspace(0.08, 0.83, 21)  # maxima as spread as SGSF's at 256 px: mean + 3 std is about 1.1
    calibration = Calibration.from_normal_scores(np.linspace(0, 1, 21), maps, 3.0)
    assert calibration.pixel_max == pytest.approx(0.83)
    assert calibration.pixel_threshold == pytest.approx(0.83)
    maps[:, 0, 0] = np.linspace(0.10, 0.11, 21)  # a tight spread: the spread rule stays below the largest value
    calibration = Calibration.from_normal_scores(np.linspace(0, 1, 21), maps, 1.0)
    assert calibration.pixel_threshold < calibration.pixel_max


def test_load_image_turns_pillows_decompression_bomb_refusal_into_a_data_error(tmp_path):
    from test_reliability import png_declaring

    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    with pytest.raises(DataError, match=r"huge\.png: image too large"):
        load_image(bomb)
