"""ST-SSAD's tuning pictures: the validation-loss landscape with the tuning path, and the loss over tuning steps.

Drawn as RGB pictures of ``SIZE`` pixels with their own axes and labels (panels are shown at 144-192 px,
so the text is drawn large enough to stay readable when they are scaled down, also on a phone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ssad.viz import HEAT_MAX, colorize

SIZE = 256
LEFT, BOTTOM, TOP, RIGHT = 64, 46, 10, 12
LABEL_FONT, TICK_FONT = 19, 17
START, END, PATH = (0, 230, 255), (60, 255, 60), (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _axes(draw: ImageDraw.ImageDraw, canvas: Image.Image, x_label: str, x_ticks: tuple[str, str], y_label: str, y_ticks: tuple[str, str]) -> None:
    """Frame, end ticks and labels of a plot that fills the area inside the margins."""
    right, bottom = SIZE - RIGHT, SIZE - BOTTOM
    draw.rectangle([LEFT - 1, TOP - 1, right, bottom], outline="black", width=1)
    tick, label = _font(TICK_FONT), _font(LABEL_FONT)
    draw.text((LEFT, bottom + 3), x_ticks[0], fill="black", font=tick)
    draw.text((right, bottom + 3), x_ticks[1], fill="black", font=tick, anchor="ra")
    draw.text(((LEFT + right) / 2, SIZE - 2), x_label, fill="black", font=label, anchor="md")
    if not y_label:
        return
    text = Image.new("RGB", (bottom - TOP, LABEL_FONT + 4), "white")
    ImageDraw.Draw(text).text(((bottom - TOP) / 2, 0), y_label, fill="black", font=label, anchor="ma")
    canvas.paste(text.rotate(90, expand=True), (0, TOP))
    draw.text((LEFT - 3, bottom), y_ticks[0], fill="black", font=tick, anchor="rd")
    draw.text((LEFT - 3, TOP), y_ticks[1], fill="black", font=tick, anchor="ra")


def _number(value: float) -> str:
    return f"{value:.2g}"


def landscape_picture(grid: dict[str, Any], path: list[list[float]]) -> np.ndarray:
    """The landscape as a heat map (dark = low loss) over physical values, with ``path`` (strengths) drawn on it.

    The first parameter runs along x, the second (if any) along y, each cell centred on its grid point (the
    grid's ``strengths``: with or without the bounds); the start is a cyan ring, the end a green dot, the
    grid's lowest point a white square.
    """
    losses = np.asarray(grid["loss"], dtype=np.float64)
    losses = losses[:, None] if losses.ndim == 1 else losses
    low, high = losses.min(), losses.max()
    heat = colorize((losses - low) / max(high - low, 1e-12) * HEAT_MAX)  # [x, y, 3]
    width, height = SIZE - RIGHT - LEFT, SIZE - BOTTOM - TOP
    cells = Image.fromarray(np.ascontiguousarray(heat.transpose(1, 0, 2)[::-1])).resize((width, height), Image.NEAREST)
    canvas = Image.new("RGB", (SIZE, SIZE), "white")
    canvas.paste(cells, (LEFT, TOP))
    draw = ImageDraw.Draw(canvas)
    n_x, n_y = losses.shape

    axes_strengths = [np.asarray(axis, dtype=np.float64) for axis in grid.get("strengths", [np.linspace(0, 1, n) for n in losses.shape])]

    def cell(strength: float, axis: np.ndarray) -> float:
        """Where a strength falls in cells of the evenly spaced axis (0 = the first cell's centre)."""
        return (strength - axis[0]) / (axis[1] - axis[0]) if len(axis) > 1 else 0.0

    def point(strengths: list[float]) -> tuple[float, float]:
        x = LEFT + (cell(strengths[0], axes_strengths[0]) + 0.5) / n_x * width
        if n_y == 1:
            return x, TOP + height / 2
        return x, TOP + height - (cell(strengths[1], axes_strengths[1]) + 0.5) / n_y * height

    best = np.unravel_index(int(np.argmin(losses)), losses.shape)
    bx, by = point([float(axis[i]) for axis, i in zip(axes_strengths, best)] + [0.5] * (2 - len(best)))
    draw.rectangle([bx - 6, by - 6, bx + 6, by + 6], outline="white", width=2)
    points = [point(p) for p in path]
    if len(points) > 1:
        draw.line(points, fill=PATH, width=2)
    if points:
        (sx, sy), (ex, ey) = points[0], points[-1]
        draw.ellipse([sx - 6, sy - 6, sx + 6, sy + 6], outline=START, width=3)
        draw.ellipse([ex - 5, ey - 5, ex + 5, ey + 5], fill=END, outline="black")
    units = list(grid["physical"])
    axes = [grid["physical"][unit] for unit in units]
    _axes(
        draw, canvas,
        units[0].replace("_", " "), (_number(axes[0][0]), _number(axes[0][-1])),
        units[1].replace("_", " ") if len(units) > 1 else "", (_number(axes[1][0]), _number(axes[1][-1])) if len(units) > 1 else ("", ""),
    )
    return np.asarray(canvas, dtype=np.float32) / 255


def loss_picture(losses: list[float]) -> np.ndarray:
    """The validation loss at each poll of the tuning, as a line with a dot per poll."""
    canvas = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(canvas)
    values = np.asarray(losses, dtype=np.float64)
    width, height = SIZE - RIGHT - LEFT, SIZE - BOTTOM - TOP
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if len(values) > 1:
        xs = LEFT + np.arange(len(values)) / (len(values) - 1) * width
        ys = TOP + height - (values - low) / max(high - low, 1e-12) * height
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(30, 90, 200), width=3)
        for x, y in zip(xs.tolist(), ys.tolist()):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 90, 200))
    _axes(draw, canvas, "poll", ("1", str(len(losses))), "val. loss", (_number(low), _number(high)))
    return np.asarray(canvas, dtype=np.float32) / 255
