"""The ssad web app: detect, watch the method work, compare methods, read the leaderboard, train your own.

A thin Gradio layer over ``ssad`` (the work is in ``ssad.service``, ``ssad.viz`` and ``ssad.leaderboard``).
``python app.py`` serves on ``GRADIO_SERVER_PORT`` (default 7860), offline, with the embedded weights.
Public API endpoints: ``/detect``, ``/compare``, ``/leaderboard``, ``/train`` (see docs/CONTRACT.md).
"""

from __future__ import annotations

import functools
import html
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio import processing_utils  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image as PILImage, UnidentifiedImageError  # noqa: E402

from ssad import service  # noqa: E402
from ssad.data import load_image  # noqa: E402
from ssad.data.datasets import IMAGE_SUFFIXES  # noqa: E402
from ssad.errors import DataError, SsadError  # noqa: E402
from ssad.leaderboard import (  # noqa: E402
    CATEGORIES, DATASETS, METRICS, RESULTS_FILE, SOURCES, Leaderboard, display_table, grouped_bars, heatmap, load_leaderboard,
    results_table,
)
from ssad.methods import METHODS  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn: Callable) -> Callable:
        return fn


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLE_MODELS = {"bottle": "mvtec/bottle", "pill": "mvtec/pill", "oct": "oct/retina"}
MAX_UPLOAD = "25mb"
SESSION_MODEL_SECONDS = 2 * 3600
"""How long a model trained in a browser session is kept after its last change (memory is freed after)."""
THEME = gr.themes.Default(primary_hue="indigo", secondary_hue="rose")
CSS = """
.verdict {border-radius: 10px; padding: 12px 16px; color: white; font-size: 1.05rem}
.verdict .label {font-size: 1.35rem; font-weight: 700}
.verdict.anomalous {background: #c62828} .verdict.normal {background: #2e7d32}
.gauge {position: relative; height: 10px; background: linear-gradient(90deg, #2e7d32, #f9a825 50%, #c62828);
        border-radius: 5px; margin: 10px 0 4px}
.gauge .tick {position: absolute; top: -4px; width: 3px; height: 18px; background: white}
.gauge .mark {position: absolute; top: -6px; width: 10px; height: 22px; background: #111; border: 2px solid white;
              border-radius: 3px; transform: translateX(-5px)}
"""


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


processing_utils.save_pil_to_cache = save_pil_to_cache_atomically


def user_errors(fn: Callable) -> Callable:
    """Turn ``SsadError`` (bad image, unknown method or model, missing weights) into a ``gr.Error``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SsadError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def examples() -> tuple[list[list[str]], list[str]]:
    """(image path, model) rows and labels for the example gallery."""
    rows, labels = [], []
    for folder, model in EXAMPLE_MODELS.items():
        for path in sorted((EXAMPLES_DIR / ("oct" if folder == "oct" else f"mvtec/{folder}")).glob("*.*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                rows.append([str(path), model])
                kind = path.stem.split("-")[0] if folder == "oct" else path.stem.rsplit("_", 1)[0]
                labels.append(f"{folder} · {kind}")
    return rows, labels


def verdict_html(detection: service.Detection) -> str:
    """Label, score against the calibrated threshold, and a gauge in units of the normal spread."""
    result = detection.result
    normalized = result.normalized_score
    position = min(max(normalized / 2, 0.0), 1.0) * 100
    return (
        f"<div class='verdict {result.label}'><span class='label'>{'⚠ Anomalous' if result.is_anomalous else '✓ Normal'}</span> &nbsp; "
        f"score {result.score:.3f} {'&gt;' if result.is_anomalous else '&le;'} threshold {result.threshold:.3f}"
        f"<div class='gauge'><div class='tick' style='left:50%'></div><div class='mark' style='left:{position:.1f}%'></div></div>"
        f"<small>calibrated score {normalized:.3g} (0 = typical normal image, 1 = threshold: "
        f"{html.escape(result.calibration.rule)}) · {detection.method} on {html.escape(detection.model)}</small></div>"
    )


def details_markdown(detection: service.Detection) -> str:
    """Wall time, device and where the weights came from."""
    extras = ", ".join(
        f"{key.replace('_', ' ')} {value:.2f}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}"
        for key, value in detection.result.extras.items() if isinstance(value, (int, float))
    )
    return (
        f"**{detection.seconds:.2f} s** wall time on `{service.DEVICE}` (decoding + inference)  \n"
        f"**Weights:** {detection.source} — `{detection.detail}`"
        + (f"  \n**Inner workings:** {extras}" if extras else "")
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
- **Score vs threshold**: the raw image score against the calibrated threshold; the gauge shows the
  *calibrated score* (0 = a typical normal image, 1 = the threshold).
- **Heat map**: the anomaly map in calibrated units (colour bar: 0 = typical normal pixel, 1 = pixel threshold).
- **Mask**: pixels above the pixel threshold divided by the sensitivity; moving the slider re-thresholds the
  stored map without running the network again.
- **Animation**: the method's inner workings frame by frame (SSM: each progressive-refinement round).

## Data and credits
- **MVTec AD** — P. Bergmann, M. Fauser, D. Sattlegger, C. Steger, *A Comprehensive Real-World Dataset for
  Unsupervised Anomaly Detection*, CVPR 2019. © MVTec Software GmbH, licensed
  **CC BY-NC-SA 4.0** (non-commercial use only). The example images are copies of a few test images.
- **Retinal OCT** — D. Kermany, K. Zhang, M. Goldbaum, *Labeled Optical Coherence Tomography (OCT) and Chest
  X-Ray Images for Classification*, Mendeley Data (doi:10.17632/rscbjbr9sj.2), licensed **CC BY 4.0**.
  Our OCT results are on *this split* of the Kermany data, not the official OCT2017 test split.
- Built with PyTorch and Gradio. Weights are embedded in `weights/` or fetched from the Hugging Face Hub
  (`{repo}@{revision}`) and cached.
"""


def build_demo(weights_dir: Path | None = None, leaderboard_file: Path = RESULTS_FILE) -> gr.Blocks:
    """The whole app as a ``gr.Blocks`` (not launched), over the models in ``weights_dir`` (default ``weights/``)."""
    workdir = Path(tempfile.mkdtemp(prefix="ssad-app-"))
    methods = service.display_names()
    models = service.model_choices(weights_dir)
    first_model = service.default_model(weights_dir)
    first_method = service.default_method(first_model, weights_dir)
    board = load_leaderboard(leaderboard_file)

    def status_line(method: str, model: str, session: service.SessionModels) -> str:
        try:
            return f"**Weights:** {service.availability(method, model, weights_dir, session).describe()}"
        except SsadError as error:
            return f"**Weights:** {error}"

    @gpu
    @user_errors
    def detect(image: Any, method: str, model: str, session: service.SessionModels):
        detection = service.detect(image, method, model, weights_dir, session)
        gif = service.animation(detection, workdir)
        n_frames = len(detection.result.frames)
        pair = service.reconstruction_pair(detection)
        return (
            detection.result.score,
            verdict_html(detection),
            service.overlay(detection),
            service.mask_annotation(detection, 1.0),
            str(gif) if gif else None,
            gr.Slider(minimum=1, maximum=max(n_frames, 1), value=n_frames or 1, step=1, interactive=n_frames > 1),
            service.frame_picture(detection, n_frames - 1),
            gr.ImageSlider(value=pair, visible=pair is not None),
            details_markdown(detection),
            detection.config,
            1.0,
            detection,
        )

    def rethreshold(sensitivity: float, detection: service.Detection | None):
        if detection is None:
            return None
        return gr.AnnotatedImage(
            value=service.mask_annotation(detection, sensitivity),
            label=f"Mask at sensitivity {sensitivity:.2f}: {100 * service.mask_share(detection, sensitivity):.1f}% of pixels",
        )

    def show_frame(index: float, detection: service.Detection | None):
        return None if detection is None else service.frame_picture(detection, int(index) - 1)

    @gpu
    @user_errors
    def compare(image: Any, model: str, session: service.SessionModels):
        if image is None:
            raise DataError("no image: upload one or pick an example")
        pixels = load_image(image)  # decoded once for all methods; a bad image fails here, before any model
        rows, outputs = [], []
        for method in methods:
            try:
                detection = service.detect(pixels, method, model, weights_dir, session, with_frames=False)
            except SsadError as error:  # no weights (or not loadable): shown, with the reason
                rows.append({"method": method, "score": None, "threshold": None, "label": "unavailable",
                             "seconds": None, "weights": str(error)})
                outputs += [f"### {method}\n**unavailable** — {error}", None]
                continue
            rows.append(detection.summary)
            outputs += [
                f"### {method}\n{verdict_html(detection)}\n\n**{detection.seconds:.2f} s** · weights: {detection.summary['weights']}",
                service.overlay(detection),
            ]
        return [pd.DataFrame(rows), *outputs]

    @user_errors
    def train(files: list[str] | None, method: str, name: str, session: service.SessionModels, progress=gr.Progress()):
        def report(done: int, total: int, message: str) -> None:
            progress((done, total), desc=message)

        model, trained = service.train_session_model(method, name or "my-images", files or [], workdir / "train", progress=report)
        session = service.remember(session, model, trained)
        info = trained.info
        message = (
            f"Trained **{trained.display_name}** as **`{model}`** on {info['n_train']} images "
            f"(+{info['n_held_out']} held out for calibration) in {info['train_seconds']:.1f} s at "
            f"{trained.config.size} px, {trained.config.epochs} epochs. It is now in the Detect and Compare model "
            f"lists for this browser session only (it is not saved on the server)."
        )
        choices = service.model_choices(weights_dir, session)
        return message, session, gr.Dropdown(choices=choices, value=model), gr.Dropdown(choices=choices, value=model), gr.Dropdown(value=trained.display_name)

    def choice_id(value: str, choices: dict[str, str], what: str) -> str:
        """The key of a dropdown choice given as key or label (the API may send either)."""
        for key, label in choices.items():
            if value in (key, label):
                return key
        raise DataError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")

    def dataset_id(dataset: str) -> str:
        return choice_id(dataset, DATASETS, "dataset")

    def metric_id(metric: str) -> str:
        return choice_id(metric, METRICS, "metric")

    @user_errors
    def leaderboard(dataset: str, metric: str, sources: list[str]) -> pd.DataFrame:
        return display_table(results_table(board, dataset_id(dataset), metric_id(metric), tuple(sources)))

    @user_errors
    def table_layout(dataset: str):
        return gr.Dataframe(column_widths=_column_widths(dataset_id(dataset)))

    @user_errors
    def charts(dataset: str, metric: str, sources: list[str]):
        dataset, metric, sources = dataset_id(dataset), metric_id(metric), tuple(sources)
        return grouped_bars(board, dataset, metric, sources), heatmap(board, dataset, metric, sources)

    example_rows, example_labels = examples()
    with gr.Blocks(title="ssad — self-supervised anomaly detection") as demo:
        session_models = gr.State({}, time_to_live=SESSION_MODEL_SECONDS)
        gr.Markdown(
            "# ssad — see how self-supervised anomaly detection finds defects\n"
            f"Methods: {', '.join(methods)} · learned from normal images only · scores calibrated on held-out "
            f"normal images · running on `{service.DEVICE}`"
        )
        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        image = upload_image(label="Image", height=300)
                        method = gr.Dropdown(methods, value=first_method, label="Method", allow_custom_value=True)
                        model = gr.Dropdown(models, value=first_model, label="Model (dataset/category)", allow_custom_value=True)
                        weights_status = gr.Markdown(status_line(first_method, first_model, {}))
                        detect_button = gr.Button("Detect", variant="primary", elem_id="detect-button")
                        gr.Examples(example_rows, [image, model], example_labels=example_labels, examples_per_page=24, label="Examples (MVTec AD test images, Kermany OCT scans)")
                    with gr.Column(scale=2):
                        verdict = gr.HTML("<i>Upload an image or pick an example, then press Detect.</i>", elem_id="verdict")
                        with gr.Row():
                            score = gr.Number(label="Image score (raw)", precision=4, interactive=False, elem_id="score")
                            details = gr.Markdown()
                        with gr.Row():
                            overlay = gr.Image(label="Heat map (calibrated)", format="png", interactive=False, height=320)
                            mask = gr.AnnotatedImage(label="Mask", format="png", color_map={service.MASK_LABEL: "#ff1744"}, height=320)
                        sensitivity = gr.Slider(0.25, 4.0, value=1.0, step=0.05, label="Sensitivity (re-thresholds the stored map; no new network run)")
                gr.Markdown("### How the method got there\nLeft: the whole animation, one frame per step of the method. "
                            "Right: pick a step with the slider to see it larger.")
                with gr.Row(equal_height=False):
                    gif = gr.Image(type="filepath", show_label=False, interactive=False, elem_id="animation", scale=1)
                    with gr.Column(scale=1):
                        frame_index = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False)
                        frame = gr.Image(show_label=False, format="png", interactive=False, elem_id="frame")
                reconstruction = gr.ImageSlider(label="Input | reconstruction (drag the handle)", format="png", visible=False, max_height=300)
                with gr.Accordion("Model configuration and calibration", open=False):
                    config = gr.JSON()
                detection_state = gr.State(None)

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    compare_image = upload_image(label="Image", height=260, elem_id="compare-image")
                    with gr.Column():
                        compare_model = gr.Dropdown(models, value=first_model, label="Model (dataset/category)", allow_custom_value=True)
                        compare_button = gr.Button("Compare all methods", variant="primary")
                        gr.Examples(example_rows, [compare_image, compare_model], example_labels=example_labels, examples_per_page=24)
                compare_table = gr.Dataframe(label="All methods on this image", interactive=False, wrap=True)
                compare_outputs: list[gr.components.Component] = []
                with gr.Row():
                    for method_name in methods:
                        with gr.Column():
                            compare_outputs.append(gr.Markdown(f"### {method_name}"))
                            compare_outputs.append(gr.Image(label=f"{method_name} heat map", format="png", interactive=False, height=300))

            with gr.Tab("Leaderboard", id="leaderboard"):
                gr.Markdown(
                    "Figures in percent. **measured** = run here with `python -m ssad evaluate` (provenance: device, input "
                    "size, epochs, commit, date); **reported** = quoted from a paper (reference given). Empty cells are "
                    "**n/a** and never filled in; a mean is shown only when every category has a figure or the paper gives one."
                )
                with gr.Row():
                    board_dataset = gr.Dropdown([(label, key) for key, label in DATASETS.items()], value="mvtec", label="Dataset", allow_custom_value=True)
                    board_metric = gr.Dropdown([(label, key) for key, label in METRICS.items()], value="image_auroc", label="Metric", allow_custom_value=True)
                    board_sources = gr.CheckboxGroup(list(SOURCES), value=list(SOURCES), label="Source")
                sources_state = gr.State(list(SOURCES))
                board_table = gr.Dataframe(
                    leaderboard("mvtec", "image_auroc", list(SOURCES)), interactive=False, wrap=True,
                    show_search="filter", pinned_columns=2, label="Methods by category", elem_id="leaderboard-table",
                    column_widths=_column_widths("mvtec"), max_height=640,
                )
                first_bars, first_heat = charts("mvtec", "image_auroc", list(SOURCES))
                board_bars = gr.Plot(first_bars, label="Per category", elem_id="leaderboard-bars")
                board_heat = gr.Plot(first_heat, label="Methods by categories")
                gr.Markdown(_problems_markdown(board))

            with gr.Tab("Train your own", id="train"):
                limits = service.TrainingLimits()
                gr.Markdown(
                    f"Upload {limits.min_images} to {limits.max_images} **normal** images (or a zip of them), pick a method "
                    f"and train a small model right here ({limits.size} px, about {limits.target_steps} steps, stopped after "
                    f"{limits.max_seconds:.0f} s). It becomes the model `custom/<name>` in the Detect and Compare tabs "
                    "for this browser session only."
                )
                with gr.Row():
                    train_files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Normal images or a zip", elem_id="train-files")
                    with gr.Column():
                        train_method = gr.Dropdown(methods, value=methods[0], label="Method", allow_custom_value=True)
                        train_name = gr.Textbox("my-images", label="Name (the model becomes custom/<name>)")
                        train_button = gr.Button("Train", variant="primary")
                train_status = gr.Markdown("*No model trained in this session yet.*", elem_id="train-status", min_height=80)

            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT.format(methods=method_blurbs(), repo=service.HUB_REPO, revision=service.HUB_REVISION))
                gr.Dataframe(pd.DataFrame(service.availability_table(weights_dir)), label="Models and where their weights come from", interactive=False, wrap=True)

        # ------------------------------------------------------------------ events
        detect_outputs = [score, verdict, overlay, mask, gif, frame_index, frame, reconstruction, details, config, sensitivity, detection_state]
        detect_button.click(detect, [image, method, model, session_models], detect_outputs, api_name="detect")
        sensitivity.release(rethreshold, [sensitivity, detection_state], mask, api_visibility="private", show_progress="hidden")
        frame_index.change(show_frame, [frame_index, detection_state], frame, api_visibility="private", show_progress="hidden")
        gr.on([method.change, model.change], status_line, [method, model, session_models], weights_status, api_visibility="private", show_progress="hidden")

        compare_button.click(compare, [compare_image, compare_model, session_models], [compare_table, *compare_outputs], api_name="compare")

        gr.on(
            [board_dataset.change, board_metric.change], leaderboard, [board_dataset, board_metric, sources_state], board_table, api_name="leaderboard"
        ).then(table_layout, board_dataset, board_table, api_visibility="private").then(
            charts, [board_dataset, board_metric, sources_state], [board_bars, board_heat], api_visibility="private"
        )
        board_sources.change(lambda chosen: chosen, board_sources, sources_state, api_visibility="private").then(
            leaderboard, [board_dataset, board_metric, sources_state], board_table, api_visibility="private"
        ).then(charts, [board_dataset, board_metric, sources_state], [board_bars, board_heat], api_visibility="private")

        train_button.click(
            train, [train_files, train_method, train_name, session_models],
            [train_status, session_models, model, compare_model, method], api_name="train", concurrency_id="train",
            show_progress_on=train_status,
        )
    return demo


def _column_widths(dataset: str) -> list[str]:
    """Readable widths: names and provenance wide, figures narrow (the table scrolls sideways)."""
    n_figures = len(CATEGORIES[dataset]) + (1 if dataset == "mvtec" else 0)
    return ["150px", "95px", *["85px"] * n_figures, "420px"]


def _problems_markdown(board: Leaderboard) -> str:
    if not board.problems:
        return f"All {len(board.rows)} rows of `leaderboard/results.csv` passed validation."
    listed = "\n".join(f"- `{problem}`" for problem in board.problems)
    return f"**{len(board.problems)} row(s) of `{RESULTS_FILE.name}` rejected when loading, not shown:**\n{listed}"


def launch(demo: gr.Blocks, **kwargs: Any):
    """Queue with a concurrency limit and serve, offline, never shared.

    Torch uses ``SSAD_TORCH_THREADS`` threads (default 1): on a small shared CPU, where a detection, a
    session's training and other programs run side by side, two threads per call measured up to 10x
    slower than one (0.27 s vs 3 s per training step, 1.1 s vs 2-16 s per SSM detection on 2 busy cores).
    """
    torch.set_num_threads(int(os.environ.get("SSAD_TORCH_THREADS", "1")))
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo.launch(
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), share=False, theme=THEME, css=CSS,
        max_file_size=MAX_UPLOAD, footer_links=["api", "settings"], **kwargs,
    )


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ssad").setLevel(logging.INFO)  # one line per model loaded (models are loaded once, shared)
    launch(build_demo())
