"""Workarounds for Gradio, kept apart from the app's wiring: uploads that fail with a clear message, output
images written atomically, library errors shown as errors that stay on the page."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from gradio import processing_utils
from PIL import Image as PILImage, UnidentifiedImageError

from ssad.errors import SsadError


def upload_image(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` upload whose decoding check answers with a clear message instead of a decoder traceback.

    The check is wrapped on the instance: a subclass of a Gradio component would make Gradio write a
    ``.pyi`` stub next to this file. ``image_mode=None`` passes the uploaded file through undecoded, so that ``ssad.data.load_image`` alone
    converts it (16-bit, CMYK, EXIF rotation: the same rules as the library and the CLI) and refuses an image
    above its pixel limit from the header, before decoding.
    """
    component = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs)
    gradio_preprocess = component.preprocess

    def preprocess(payload: Any) -> Any:
        name = getattr(payload, "orig_name", None) or "the upload"
        try:
            return gradio_preprocess(payload)
        except PILImage.DecompressionBombError as error:
            raise gr.Error(f"{name}: image too large ({error})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise gr.Error(f"{name}: not a readable image ({type(error).__name__})") from None

    component.preprocess = preprocess
    return component


def save_pil_to_cache_atomically(img: PILImage.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``save_pil_to_cache`` with the file renamed into place instead of rewritten.

    Gradio stores output images under the hash of their bytes and rewrites the file for every identical
    output; a client still downloading it got a truncated body (``peer closed connection``), seen in the
    8-client load test when several users score the same image. Its ``save_file_to_cache`` already renames.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".partial-", delete=False) as partial:
        partial.write(data)
    os.replace(partial.name, target)
    return str(target)



def install() -> None:
    """Patch Gradio's image cache (see :func:`save_pil_to_cache_atomically`); called once by the app."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically


def user_errors(fn: Callable) -> Callable:
    """Turn ``SsadError`` (bad image, unknown method or model, missing weights) into a ``gr.Error`` that stays
    on the page until it is closed (Gradio's default toast vanishes after a few seconds)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SsadError as error:
            raise gr.Error(str(error), duration=None, print_exception=False) from None

    return wrapper
