"""Calibration semantics of the result type, and the pictures made from it."""

import numpy as np
from PIL import Image

from ssad.result import AnomalyResult, Calibration, Frame, Panel
from ssad.viz import HEAT_MAX, colorize, frames_to_gif, heat_overlay, render_frame


def test_calibration_from_normal_scores():
    scores = np.array([1.0, 2.0, 3.0])
    maps = np.stack([np.full((4, 4), v) for v in (0.1, 0.2, 0.3)])
    cal = Calibration.from_normal_scores(scores, maps, sigmas=3.0)
    assert cal.image_threshold == 2.0 + 3 * np.std(scores)
    assert np.isclose(cal.pixel_mean, 0.2)
    assert np.isclose(cal.pixel_max, 0.3)
    assert np.isclose(cal.pixel_threshold, min(0.2 + 3 * np.std([0.1, 0.2, 0.3]), 0.3))  # capped: 0.3, not 0.445
    assert np.allclose(cal.calibrated_map(np.array([cal.pixel_mean, cal.pixel_threshold])), [0.0, 1.0])


def test_label_and_sensitivity_follow_the_stored_threshold():
    cal = Calibration(image_mean=0.0, image_std=1.0, image_threshold=3.0, pixel_mean=0.0, pixel_threshold=1.0, n_images=5, rule="t")
    anomaly_map = np.array([[0.2, 0.6], [1.5, 3.0]])
    result = AnomalyResult(score=3.5, anomaly_map=anomaly_map, calibration=cal)
    assert result.label == "anomalous" and result.normalized_score > 1
    assert AnomalyResult(score=2.9, anomaly_map=anomaly_map, calibration=cal).label == "normal"
    assert result.mask().tolist() == [[False, False], [True, True]]
    assert result.mask(sensitivity=2.0).tolist() == [[False, True], [True, True]]
    assert result.mask(sensitivity=0.5).tolist() == [[False, False], [False, True]]


def test_heat_colours_are_ordered_and_clipped():
    colours = colorize(np.array([-1.0, 0.0, 1.0, HEAT_MAX, 10.0])).astype(int)
    assert (colours[0] == colours[1]).all() and (colours[3] == colours[4]).all()
    assert colours[1].sum() < colours[2].sum() < colours[3].sum()


def test_overlay_leaves_normal_pixels_alone_and_adds_a_bar():
    image = np.full((32, 32, 3), 128, np.uint8)
    calm = heat_overlay(image, np.zeros((32, 32)), with_bar=False)
    assert (calm == image).all()
    with_bar = heat_overlay(image, np.full((32, 32), 2.0))
    assert with_bar.shape[0] == 32 and with_bar.shape[1] > 32
    assert not (with_bar[:, :32] == image).all()


def test_frames_become_an_animated_gif(tmp_path):
    cal = Calibration(0.0, 1.0, 3.0, 0.0, 1.0, 5, "t")
    frames = tuple(
        Frame(f"round {i}", (Panel("img", np.random.rand(16, 16, 3)), Panel("mask", np.eye(16), "mask"), Panel("map", np.eye(16) * i, "heat")))
        for i in range(3)
    )
    strip = render_frame(frames[0], cal, panel_size=64)
    assert strip.ndim == 3 and strip.shape[1] > 3 * 64
    gif = frames_to_gif(frames, cal, tmp_path / "a.gif")
    with Image.open(gif) as picture:
        assert picture.is_animated and picture.n_frames == 3


def decoded_frames(path) -> list[np.ndarray]:
    """Every frame of a GIF as a browser shows it (each composed over the previous ones), as RGB."""
    from PIL import ImageSequence

    with Image.open(path) as picture:
        return [np.asarray(frame.convert("RGB")).astype(int) for frame in ImageSequence.Iterator(picture)]


def test_gif_frames_show_only_what_each_frame_draws(tmp_path):
    """Frames of different widths and contents: no pixel of an earlier frame is left in a later one."""
    cal = Calibration(0.0, 1.0, 3.0, 0.0, 1.0, 5, "t")
    rng = np.random.default_rng(0)
    frames = tuple(
        Frame("a long caption that widens the second frame " * (i == 1) + f"step {i}",
              tuple(Panel(f"p{j}", rng.random((16, 16, 3))) for j in range(3 - (i > 1))))
        for i in range(5)
    )
    decoded = decoded_frames(frames_to_gif(frames, cal, tmp_path / "g.gif", panel_size=48))
    assert len(decoded) == len(frames)
    for frame, shown in zip(frames, decoded):
        drawn = render_frame(frame, cal, panel_size=48).astype(int)
        height, width = drawn.shape[:2]
        assert np.abs(shown[:height, :width] - drawn).max() < 60  # palette error only
        assert (shown[height:] >= 240).all() and (shown[:, width:] >= 240).all()  # outside the frame: blank


def test_a_tall_panel_keeps_its_aspect_in_the_animation():
    cal = Calibration(0.0, 1.0, 3.0, 0.0, 1.0, 5, "t")
    tall = np.zeros((100, 40, 3))  # a black 40 x 100 scan
    strip = render_frame(Frame("tall", (Panel("scan", tall, "image"),)), cal, panel_size=50)
    gap, caption_and_title = 6, 24 + 18
    square = strip[caption_and_title : caption_and_title + 50, gap : gap + 50].min(axis=2)
    dark_columns = np.flatnonzero((square < 128).all(axis=0))
    assert len(dark_columns) == 20 and dark_columns[0] == 15  # 20 px wide in its 50 px square, centred
