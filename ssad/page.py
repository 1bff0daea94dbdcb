"""What the app's pages say and look like: the verdict card, the example gallery, the About text, the CSS."""

from __future__ import annotations

import html
import sys
from pathlib import Path

from PIL import Image

from ssad import service
from ssad.catalog import MVTEC_LAYOUT_DATASETS, OCT_MODEL
from ssad.data.datasets import IMAGE_SUFFIXES
from ssad.leaderboard import CATEGORIES, RESULTS_FILE, Leaderboard
from ssad.methods import METHODS

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_MODELS = {
    **{f"{dataset}/{category.name}": f"{dataset}/{category.name}"
       for dataset in MVTEC_LAYOUT_DATASETS for category in sorted((EXAMPLES_DIR / dataset).glob("*")) if category.is_dir()},
    "oct": OCT_MODEL,
}
"""Example folder -> the model its images are scored with (``examples/<dataset>/<category>/``, and ``examples/oct/``)."""
THUMBNAIL = 128
CSS = """
.verdict {border-radius: 10px; padding: 12px 16px; color: white; font-size: 1.05rem}
.verdict .label {font-size: 1.35rem; font-weight: 700}
.verdict.anomalous {background: #c62828} .verdict.normal {background: #2e7d32}
.gauge {position: relative; height: 10px; background: linear-gradient(90deg, #2e7d32, #f9a825 50%, #c62828);
        border-radius: 5px; margin: 10px 0 2px}
.gauge .tick {position: absolute; top: -4px; width: 3px; height: 18px; background: white}
.gauge .mark {position: absolute; top: -6px; width: 10px; height: 22px; background: #111; border: 2px solid white;
              border-radius: 3px; transform: translateX(-5px)}
.gauge-labels {display: flex; justify-content: space-between; font-size: 0.8rem}
#tabs .tab-container button {padding-left: 7px; padding-right: 7px}  /* five tabs fit a 390 px phone */
.why {background: #fff3e0; color: #5d4037; border-radius: 8px; padding: 8px 12px; margin-top: 6px}
"""
SCROLL_TO_VERDICT = """() => { const v = document.getElementById('verdict'); if (!v) return;
  const box = v.getBoundingClientRect(); if (box.top < 0 || box.bottom > innerHeight) v.scrollIntoView({block: 'start'}); }"""
"""Run after Detect: on a phone the results sit below the inputs, out of view."""


def examples(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(thumbnail path, caption) for the gallery, and (image path, model) for each, one per (dataset, type).

    Thumbnails are written into ``folder`` at start-up, so the gallery sends small pictures.
    """
    folder.mkdir(parents=True, exist_ok=True)
    thumbnails, targets = [], []
    for sub, model in EXAMPLE_MODELS.items():
        for path in sorted((EXAMPLES_DIR / sub).glob("*.*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            kind = path.stem.split("-")[0].lower() if sub == "oct" else path.stem.rsplit("_", 1)[0]
            thumbnail = folder / f"{sub.replace('/', '-')}-{path.stem}.jpg"
            with Image.open(path) as picture:
                small = picture.convert("RGB")
                small.thumbnail((THUMBNAIL, THUMBNAIL))  # aspect kept: a 205 x 512 scan stays narrow
                small.save(thumbnail, quality=85)
            thumbnails.append((str(thumbnail), f"{sub.split('/')[-1]} · {kind.replace('_', ' ')}"))
            targets.append((str(path), model))
    return thumbnails, targets


def verdict_html(detection: service.Detection, sensitivity: float = 1.0) -> str:
    """The verdict in plain words, a labelled gauge, and why an anomalous image may show an empty mask."""
    result = detection.result
    position = min(max(result.normalized_score / 2, 0.0), 1.0) * 100
    why = service.empty_mask_reason(detection, sensitivity)
    return (
        f"<div class='verdict {result.label}'><span class='label'>{'⚠' if result.is_anomalous else '✓'} "
        f"{html.escape(service.verdict_sentence(detection))}</span>"
        f"<div class='gauge' role='img' aria-label='score on a scale from typical normal to twice the threshold'>"
        f"<div class='tick' style='left:50%'></div><div class='mark' style='left:{position:.1f}%'></div></div>"
        "<div class='gauge-labels'><span>typical normal</span><span>threshold</span><span>2 x threshold</span></div>"
        f"<small>{html.escape(service.calibration_sentence(detection))} {detection.method} on "
        f"{html.escape(detection.model)}.</small></div>"
        + (f"<div class='why'>{html.escape(why)}</div>" if why else "")
    )


def method_blurbs() -> str:
    """The first paragraph of each registered method's module docstring."""
    lines = []
    for cls in METHODS.values():
        doc = (sys.modules[cls.__module__].__doc__ or sys.modules[cls.__module__.rsplit(".", 1)[0]].__doc__ or "").strip()
        lines.append(f"- **{cls.display_name}** — {' '.join(doc.split(chr(10) + chr(10))[0].split())}")
    return "\n".join(lines)


ABOUT = """
## What this is
An interactive demo and an honest per-category benchmark of self-supervised image anomaly detection.
Every method learns from **normal images only**; its scores are calibrated on held-out normal images
that were not trained on (mean + k standard deviations), and the calibration travels with the weights.
No image is ever min-max normalised on its own, so a normal image looks calm and a defect stands out.

## Methods
{methods}

## Reading the results
- **Verdict**: *Anomalous* when the image score passes the threshold, with how far ("3.1 x the normal
  threshold"); the gauge runs from a typical normal image through the threshold to twice it.
- **Heat map**: the anomaly map in calibrated units (colour bar: 0 = typical normal pixel, 1 = pixel threshold);
  the full-resolution map is a download below the details.
- **Mask**: pixels above the pixel threshold divided by the sensitivity; moving the slider (or its arrow keys)
  re-thresholds the stored map without running the network again. An image can pass the image threshold
  with no single pixel above the pixel threshold: the page then says so.
- **Animation**: the method's inner workings frame by frame (SSM: each progressive-refinement round; SGSF:
  the guidance and segmentation; ST-SSAD: its training history, the same for every image, then this image's map).

## Data and credits
- **MVTec AD** — P. Bergmann, M. Fauser, D. Sattlegger, C. Steger, *A Comprehensive Real-World Dataset for
  Unsupervised Anomaly Detection*, CVPR 2019. © MVTec Software GmbH, licensed
  **CC BY-NC-SA 4.0** (non-commercial use only). The example images are copies of a few test images.
- **Retinal OCT** — D. Kermany, K. Zhang, M. Goldbaum, *Labeled Optical Coherence Tomography (OCT) and Chest
  X-Ray Images for Classification*, Mendeley Data (doi:10.17632/rscbjbr9sj.2), licensed **CC BY 4.0**.
  Our OCT results are on *this split* of the Kermany data, not the official OCT2017 test split.
- **KolektorSDD** — D. Tabernik, S. Šela, J. Skvarč, D. Skočaj, *Segmentation-based deep-learning approach for
  surface-defect detection*, Journal of Intelligent Manufacturing 2020; ViCoS Lab, University of Ljubljana,
  licensed **CC BY-NC-SA 4.0**. Its train/test split is ours (the dataset has none for unsupervised training).
- **Magnetic-tile defects** — Y. Huang, C. Qiu, K. Yuan, *Surface defect saliency of magnetic tile*, The Visual
  Computer 2020; no licence is stated by the source. Its train/test split is ours.
- MVTec *cable* and *toothbrush* come from a copy whose test split differs slightly from the official one
  (a few cable test images missing; toothbrush's test/good drawn from its training images): their figures
  are on this copy's split.
- Built with PyTorch and Gradio. Weights are embedded in `weights/` or fetched from the Hugging Face Hub
  (`{repo}@{revision}`) and cached.
"""


def unavailable_markdown(weights_dir: Path | None = None) -> str:
    """The usual categories no method has weights for here, with the reason (they are not offered)."""
    offered = set(service.model_choices(weights_dir))
    missing = [model for model in service.USUAL_MODELS if model not in offered]
    if not missing:
        return ""
    return ("## Models not offered\nNo trained weights are reachable here (not in `weights/`, not in the Hugging Face "
            f"cache; the Hub is not queried offline) for: {', '.join(f'`{m}`' for m in missing)}. "
            "Train one with `python -m ssad train`, or in the Train tab for your own images.")


def column_widths(dataset: str) -> list[str]:
    """Readable widths: names and provenance wide, figures narrow (the table scrolls sideways)."""
    n_figures = len(CATEGORIES[dataset]) + (1 if dataset == "mvtec" else 0)
    return ["150px", "95px", *["85px"] * n_figures, "420px"]


def problems_markdown(board: Leaderboard) -> str:
    if not board.problems:
        return f"All {len(board.rows)} rows of `leaderboard/results.csv` passed validation."
    listed = "\n".join(f"- `{problem}`" for problem in board.problems)
    return f"**{len(board.problems)} row(s) of `{RESULTS_FILE.name}` rejected when loading, not shown:**\n{listed}"




def animation_note(detection: service.Detection) -> str:
    """What the animation shows for this method (ST-SSAD's is its training history, the same for every image)."""
    if detection.method == "ST-SSAD":
        return ("**ST-SSAD's animation is its training history**, the same for every image: how the augmentation it learns "
                "from was tuned step by step. Only the last frame is this image's map.")
    return "The animation plays every step of the method on this image; the step slider shows one step larger."
