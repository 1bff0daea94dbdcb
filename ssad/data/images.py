"""Decoding any image predictably, with limits, into RGB uint8; resizing; tensors.

Uploads come in every format: grey, 16-bit, RGBA, CMYK, palette, animated, EXIF-rotated, huge. Each is
either converted by one fixed rule or refused with a :class:`DataError` that says what is wrong:

* EXIF orientation is applied, so the picture is upright as people see it.
* Animated images (GIF, APNG, WebP): the first frame.
* 16- and 32-bit integer images are scaled by their type's range (65535 -> 255), float images are
  taken as [0, 1]; grey is copied to three channels.
* Transparency is composited over black (a fully opaque image is unchanged); CMYK and palette images
  are converted by Pillow's standard rules.
* Images above :data:`MAX_PIXELS` are refused from their header, before they are decoded (no
  decompression bombs); images smaller than :data:`MIN_SIDE` on a side are refused.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ssad.errors import DataError

MAX_PIXELS = 50_000_000
"""Largest accepted image (width x height), checked before decoding; about 7000 x 7000."""
MIN_SIDE = 8
"""Smallest accepted width and height."""

_EXIF_ORIENTATION = 0x0112

ImageSource = np.ndarray | str | Path | bytes


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An RGB uint8 array HxWx3 from a path, encoded bytes or an array, converted by the rules above."""
    if isinstance(source, np.ndarray):
        return _check_size(_array_to_rgb(source, "array"), "array")
    name = Path(source).name if isinstance(source, (str, Path)) else "image"
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise DataError(f"{source}: no such image file")
    try:
        opened = Image.open(source if isinstance(source, (str, Path)) else io.BytesIO(source))
    except (UnidentifiedImageError, ValueError):
        raise DataError(f"{name}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as error:  # Pillow refuses these in open, before our own size check
        raise DataError(f"{name}: image too large ({error})") from None
    except OSError as error:
        raise DataError(f"{name}: cannot read ({error})") from None
    with opened as picture:
        width, height = picture.size
        if width * height > max_pixels:
            raise DataError(f"{name}: {width}x{height} pixels is above the limit of {max_pixels:,} pixels")
        try:
            picture.seek(0)
            picture = ImageOps.exif_transpose(picture)
            picture.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{name}: corrupt or truncated image ({error})") from None
        return _check_size(_pil_to_rgb(picture), name)


def load_image_at_most(source: ImageSource, longest: int) -> np.ndarray:
    """:func:`load_image`, with the longer side reduced to at most ``longest`` (area-averaged).

    A JPEG more than twice as large is decoded at 1/2 to 1/8 scale (Pillow's draft mode, by the decoder
    itself), which takes a 24-megapixel phone photo from half a second to a tenth. Anything else, and any
    JPEG that fails on this path, goes through :func:`load_image` and its rules and errors.
    """
    pixels = None
    if isinstance(source, (str, Path)):
        try:
            with Image.open(source) as picture:
                width, height = picture.size
                if picture.format == "JPEG" and width * height <= MAX_PIXELS and max(width, height) > 2 * longest:
                    scale = longest / max(width, height)
                    picture.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                    pixels = load_image(np.asarray(ImageOps.exif_transpose(picture).convert("RGB")))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            pixels = None
    return fit_within(load_image(source) if pixels is None else pixels, longest)


def fit_within(pixels: np.ndarray, longest: int) -> np.ndarray:
    """The RGB uint8 image with its longer side at most ``longest`` (itself when it already is), area-averaged."""
    height, width = pixels.shape[:2]
    scale = min(1.0, longest / max(height, width))
    if scale == 1.0:
        return pixels
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(shape, Image.BILINEAR, reducing_gap=2.0))


def _pil_to_rgb(picture: Image.Image) -> np.ndarray:
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"))
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_rgb(np.asarray(picture), "image")
    return np.asarray(picture.convert("RGB"))


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """uint8 HxWx3 from a grey, RGB or RGBA array of any numeric type (scaled by the type's range)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise DataError(f"{name}: an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype == np.uint8:
        scaled = array
    elif array.dtype == bool:
        scaled = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        scaled = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        # 16-bit images arrive as uint16 or (from Pillow's "I" mode) int32 holding 0..65535.
        scaled = (np.clip(array, 0, 65535).astype(np.float64) / 257).round().astype(np.uint8)
    else:
        raise DataError(f"{name}: unsupported pixel type {array.dtype}")
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=2)
    elif scaled.shape[2] == 4:
        alpha = scaled[..., 3:].astype(np.float64) / 255
        scaled = (scaled[..., :3] * alpha).round().astype(np.uint8)
    return np.ascontiguousarray(scaled)


def _check_size(pixels: np.ndarray, name: str) -> np.ndarray:
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise DataError(f"{name}: {width}x{height} pixels is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    return pixels


def resize_image(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The RGB uint8 image resized to ``shape`` (height, width), antialiased bicubic."""
    height, width = shape
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC))


def input_shape(aspect: float, size: int, multiple: int) -> tuple[int, int]:
    """(height, width) of about ``size`` x ``size`` pixels with width / height near ``aspect``, both multiples of ``multiple``.

    Keeping the pixel count rather than the long side gives a 205 x 512 scan the compute of a square
    image, and the network strides need sides that divide evenly.
    """
    root = math.sqrt(aspect)
    return tuple(max(multiple, round(side / multiple) * multiple) for side in (size / root, size * root))  # type: ignore[return-value]


def median_aspect(paths: list[Path]) -> float:
    """The median width / height of the images at ``paths``, read from their headers (EXIF rotation applied)."""
    aspects = []
    for path in paths:
        try:
            with Image.open(path) as picture:
                width, height = picture.size
                if picture.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{path}: unreadable image ({error})") from None
        aspects.append(width / height)
    if not aspects:
        raise DataError("no images to take an aspect ratio from")
    return float(np.median(aspects))


def image_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1] from RGB uint8 HxWx3 (no mean/std normalisation, as in SSM)."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


def load_mask(path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool HxW at ``shape`` (nearest resize); all False when there is none."""
    if path is None:
        return np.zeros(shape, dtype=bool)
    try:
        with Image.open(path) as picture:
            grey = picture.convert("L")
            if grey.size != (shape[1], shape[0]):
                grey = grey.resize((shape[1], shape[0]), Image.NEAREST)
            return np.asarray(grey) >= 128
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{path}: unreadable mask ({error})") from None
