"""Pictures of results: calibrated heat-map overlays with a colour bar, masks, and animation frames as a GIF.

Heat maps are always coloured in calibrated units (0 = a typical normal pixel, 1 = the pixel threshold),
never by min-max of the image itself, so a normal image looks calm and a defect stands out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ssad.result import AnomalyResult, Calibration, Frame, Panel

HEAT_MAX = 2.0
"""Calibrated value shown at the top of the colour scale (twice the threshold)."""

# Control points of a perceptually ordered dark-blue -> red -> yellow -> white scale ("inferno"-like).
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def colorize(values: np.ndarray, vmax: float = HEAT_MAX) -> np.ndarray:
    """Map values in [0, vmax] (clipped) to RGB uint8 with the heat scale."""
    t = np.clip(np.asarray(values, dtype=np.float64) / vmax, 0.0, 1.0)
    channels = [np.interp(t, _STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def colour_bar(height: int, width: int = 64, vmax: float = HEAT_MAX) -> np.ndarray:
    """A vertical colour bar labelled in calibrated units, with the threshold marked at 1."""
    bar_width = max(10, width // 4)
    gradient = colorize(np.linspace(vmax, 0.0, height)[:, None].repeat(bar_width, axis=1), vmax)
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(Image.fromarray(gradient), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(9, height // 20))
    for value, label in ((vmax, f"{vmax:g}"), (1.0, "1 thr"), (0.0, "0")):
        y = int(round((1 - value / vmax) * (height - 1)))
        draw.line([(0, y), (bar_width + 3, y)], fill="black", width=1)
        draw.text((bar_width + 5, min(max(0, y - 6), height - 14)), label, fill="black", font=font)
    return np.asarray(canvas)


def heat_overlay(image: np.ndarray, calibrated_map: np.ndarray, alpha: float = 0.5, with_bar: bool = True) -> np.ndarray:
    """Blend the coloured calibrated map over the RGB uint8 image; pixels below 0 stay uncoloured.

    A map smaller than the image is coloured at its own size and enlarged, and the blend runs in Pillow's
    uint8 code: a 24-megapixel photo takes a fraction of a second, where float arrays of its size take seconds.
    """
    heat = Image.fromarray(colorize(calibrated_map))
    weight = Image.fromarray((255 * alpha * np.clip(calibrated_map / HEAT_MAX * 2, 0.0, 1.0)).round().astype(np.uint8))
    photo = Image.fromarray(image)
    if heat.size != photo.size:
        heat, weight = heat.resize(photo.size, Image.BILINEAR), weight.resize(photo.size, Image.BILINEAR)
    blended = np.asarray(Image.composite(heat, photo, weight))
    if not with_bar:
        return blended
    return np.concatenate([blended, colour_bar(image.shape[0], width=max(48, image.shape[0] // 5))], axis=1)


def result_overlay(image: np.ndarray, result: AnomalyResult) -> np.ndarray:
    """The heat-map overlay of a result on its image, with the colour bar."""
    return heat_overlay(image, result.calibrated_map())


def _panel_picture(panel: Panel, calibration: Calibration, size: int) -> Image.Image:
    """The panel drawn in a ``size`` x ``size`` square, its aspect kept (a 205 x 512 scan stays narrow), on white."""
    array = panel.array
    if panel.kind == "heat":
        pixels = colorize(calibration.calibrated_map(array))
    else:
        pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    height, width = pixels.shape[:2]
    scale = size / max(height, width)
    shown = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(pixels).convert("RGB").resize(shown, Image.NEAREST if panel.kind == "mask" else Image.BILINEAR)
    square = Image.new("RGB", (size, size), "white")
    square.paste(picture, ((size - shown[0]) // 2, (size - shown[1]) // 2))
    return square


def _title_font(title: str, width: int) -> ImageFont.ImageFont:
    """The largest font from 12 down to 8 px in which a panel title fits its panel's width."""
    for size in range(12, 8, -1):
        font = _font(size)
        if font.getlength(title) <= width:
            return font
    return _font(8)


def render_frame(frame: Frame, calibration: Calibration, panel_size: int = 192) -> np.ndarray:
    """One frame as a strip of titled panels under its caption."""
    title_height, caption_height, gap = 18, 24, 6
    n = len(frame.panels)
    caption_font = _font(14)
    # The strip widens (panels stay left) so that a long caption is never cut off.
    width = max(n * panel_size + (n + 1) * gap, int(caption_font.getlength(frame.caption)) + 2 * gap)
    canvas = Image.new("RGB", (width, caption_height + title_height + panel_size + gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 4), frame.caption, fill="black", font=caption_font)
    for i, panel in enumerate(frame.panels):
        x = gap + i * (panel_size + gap)
        draw.text((x, caption_height), panel.title, fill=(60, 60, 60), font=_title_font(panel.title, panel_size))
        canvas.paste(_panel_picture(panel, calibration, panel_size), (x, caption_height + title_height))
    return np.asarray(canvas)


def _padded(picture: np.ndarray, height: int, width: int) -> Image.Image:
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    return canvas


def frames_to_gif(
    frames: tuple[Frame, ...], calibration: Calibration, path: str | Path, seconds_per_frame: float = 1.2, panel_size: int = 192
) -> Path:
    """Write the frames as a looping animated GIF (the last frame held twice as long).

    Every frame is drawn whole on a canvas of one size and replaces the previous one (disposal 2, no
    transparency): a frame narrower than the first, or one diffed against it, would leave pixels of
    earlier frames showing.
    """
    if not frames:
        raise ValueError("no frames to animate")
    rendered = [render_frame(frame, calibration, panel_size) for frame in frames]
    height, width = max(p.shape[0] for p in rendered), max(p.shape[1] for p in rendered)
    # Fast octree palettes: about 10x quicker than Pillow's default median cut, and alike to the eye.
    pictures = [_padded(p, height, width).quantize(method=Image.Quantize.FASTOCTREE) for p in rendered]
    durations = [int(seconds_per_frame * 1000)] * len(pictures)
    durations[-1] *= 2
    path = Path(path)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0, optimize=False, disposal=2)
    return path
