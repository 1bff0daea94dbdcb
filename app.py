"""The ssad web app: detect, watch the method work, compare methods, read the leaderboard, train your own.

Wiring only: one function per tab over ``ssad.service`` (the work), ``ssad.page`` (texts and looks),
``ssad.leaderboard`` (tables and charts) and ``ssad.gradio_fixes`` (Gradio workarounds).
``python app.py`` serves on ``GRADIO_SERVER_PORT`` (default 7860), offline, with the embedded weights.
Public API endpoints: ``/detect``, ``/compare``, ``/leaderboard``, ``/train`` (see docs/CONTRACT.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ssad import gradio_fixes, page, service  # noqa: E402
from ssad.data import load_image  # noqa: E402
from ssad.errors import DataError, SsadError  # noqa: E402
from ssad.gradio_fixes import upload_image, user_errors  # noqa: E402
from ssad.leaderboard import (  # noqa: E402
    DATASETS, METRICS, RESULTS_FILE, SOURCES, display_table, grouped_bars, heatmap, load_leaderboard, results_table,
)

try:  # ZeroGPU on Hugging Face Spaces; a no-op everywhere else
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn: Callable) -> Callable:
        return fn


MAX_UPLOAD = "25mb"
SESSION_MODEL_SECONDS = 2 * 3600
"""How long a model trained in a browser session is kept after its last change (memory is freed after)."""
PHOTO_FORMAT = "webp"  # the pictures of an image: a third of PNG's encoding time and a tenth of its bytes
THEME = gr.themes.Default(primary_hue="indigo", secondary_hue="rose")
gradio_fixes.install()


def choice_id(value: str, choices: dict[str, str], what: str) -> str:
    """The key of a dropdown choice given as key or label (the API may send either)."""
    for key, label in choices.items():
        if value in (key, label):
            return key
    raise DataError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


class App:
    """The tabs of one demo; ``build_demo`` lays them out and wires the events between them."""

    def __init__(self, weights_dir: Path | None, leaderboard_file: Path):
        self.weights_dir = weights_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="ssad-app-"))
        self.methods = service.display_names()
        self.models = service.model_choices(weights_dir)
        self.first_model = service.default_model(weights_dir)
        self.first_method = service.default_method(self.first_model, weights_dir)
        self.board = load_leaderboard(leaderboard_file)
        self.session = gr.State({}, time_to_live=SESSION_MODEL_SECONDS)

    def status_line(self, method: str, model: str, session: service.SessionModels) -> str:
        try:
            return f"**Weights:** {service.availability(method, model, self.weights_dir, session).describe()}"
        except SsadError as error:
            return f"**Weights:** {error}"

    # ------------------------------------------------------------------ Detect

    def detect_tab(self) -> None:
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                image = upload_image(label="Image", height=300, elem_id="detect-image")
                method = gr.Dropdown(self.methods, value=self.first_method, label="Method", allow_custom_value=True)
                self.model = gr.Dropdown(self.models, value=self.first_model, label="Model (dataset/category)", allow_custom_value=True)
                weights_status = gr.Markdown(self.status_line(self.first_method, self.first_model, {}))
                button = gr.Button("Detect", variant="primary", elem_id="detect-button")
                self.examples(image, self.model, "detect-examples")
            with gr.Column(scale=2):
                verdict = gr.HTML("<i>Upload an image or pick an example, then press Detect.</i>", label="Verdict", elem_id="verdict")
                with gr.Row(visible=False) as score_row:  # shown with the first result: no score before there is one
                    score = gr.Number(label="Image score", precision=4, interactive=False, elem_id="score")
                    label = gr.Textbox(label="Label", interactive=False, elem_id="label")
                overlay = gr.Image(label="Heat map (calibrated)", format=PHOTO_FORMAT, interactive=False, height=320, elem_id="heatmap")
                mask = gr.AnnotatedImage(label="Mask", format=PHOTO_FORMAT, color_map={service.MASK_LABEL: "#ff1744"}, height=320, show_legend=False, elem_id="mask")
                sensitivity = gr.Slider(0.25, 4.0, value=1.0, step=0.05, label="Sensitivity (re-thresholds the stored map; no new network run)", elem_id="sensitivity")
                details = gr.Markdown(label="Details")
                download = gr.File(label="Full-resolution heat map (PNG)", interactive=False, elem_id="download")
        with gr.Accordion("How the method got there", open=True):
            animation_note = gr.Markdown("The animation plays every step of the method; the step slider shows one step larger.", label="About the animation")
            gif = gr.Image(type="filepath", label="Animation", show_label=False, interactive=False, elem_id="animation")
            frame_index = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False)
            frame = gr.Image(label="Step picture", show_label=False, format="png", interactive=False, elem_id="frame")
        reconstruction = gr.ImageSlider(label="Input | reconstruction (drag the handle)", format=PHOTO_FORMAT, visible=False, max_height=300)
        with gr.Accordion("Model configuration and calibration", open=False):
            config = gr.JSON(label="Configuration")
        detection = gr.State(None)

        @gpu
        @user_errors
        def detect(image: Any, method: str, model: str, session: service.SessionModels):
            found = service.detect(image, method, model, self.weights_dir, session)
            n_frames = len(found.result.frames)
            pair = service.reconstruction_pair(found)
            gif_path = service.animation(found, self.workdir)
            return (
                found.result.score, found.result.label, page.verdict_html(found),
                service.overlay(found), service.mask_annotation(found, 1.0), str(gif_path) if gif_path else None,
                gr.Slider(minimum=1, maximum=max(n_frames, 2), value=n_frames or 1, step=1, interactive=n_frames > 1),  # Gradio needs min < max
                service.frame_picture(found, n_frames - 1), gr.ImageSlider(value=pair, visible=pair is not None),
                service.details_markdown(found, str(service.current_device())), found.config, 1.0,
                page.animation_note(found), found,
            )

        def mask_with_legend(found: service.Detection, level: float) -> gr.AnnotatedImage:
            share = service.mask_share(found, level)
            return gr.AnnotatedImage(value=service.mask_annotation(found, level), show_legend=share > 0,
                                     label=f"Mask at sensitivity {level:.2f}: {100 * share:.1f}% of pixels")

        def rethreshold(level: float, found: service.Detection | None):
            if found is None:
                return None, gr.HTML()
            return mask_with_legend(found, level), page.verdict_html(found, level)

        outputs = [score, label, verdict, overlay, mask, gif, frame_index, frame, reconstruction, details, config, sensitivity, animation_note, detection]
        button.click(detect, [image, method, self.model, self.session], outputs, api_name="detect").success(
            lambda found: (gr.Row(visible=True), mask_with_legend(found, 1.0)), detection, [score_row, mask], api_visibility="private", show_progress="hidden", js=page.SCROLL_TO_VERDICT).then(
            lambda found: service.full_resolution_map(found, self.workdir) if found else None, detection, download, api_visibility="private", show_progress="hidden")
        sensitivity.change(rethreshold, [sensitivity, detection], [mask, verdict], api_visibility="private", show_progress="hidden",
                           trigger_mode="always_last")  # drag, arrow keys and the number box alike
        frame_index.change(lambda i, found: None if found is None else service.frame_picture(found, int(i) - 1),
                           [frame_index, detection], frame, api_visibility="private", show_progress="hidden")
        gr.on([method.change, self.model.change], self.status_line, [method, self.model, self.session], weights_status,
              api_visibility="private", show_progress="hidden")
        self.detect_method = method

    def examples(self, image: gr.Image, model: gr.Dropdown, elem_id: str) -> None:
        """A collapsible gallery of thumbnails, one per (dataset, type); a click loads the image and its model."""
        thumbnails, targets = page.examples(self.workdir / "thumbnails")
        with gr.Accordion("Examples (test images of MVTec AD, KolektorSDD, Magnetic-tile and Kermany OCT)", open=True):
            gallery = gr.Gallery(thumbnails, label="Examples", show_label=False, columns=3, height="auto",
                                 allow_preview=False, elem_id=elem_id)

        def pick(evt: gr.SelectData):
            return targets[evt.index]

        gallery.select(pick, None, [image, model], api_visibility="private", show_progress="hidden")

    # ------------------------------------------------------------------ Compare

    def compare_tab(self) -> None:
        with gr.Row():
            image = upload_image(label="Image", height=260, elem_id="compare-image")
            with gr.Column():
                self.compare_model = gr.Dropdown(self.models, value=self.first_model, label="Model (dataset/category)", allow_custom_value=True)
                button = gr.Button("Compare all methods", variant="primary", elem_id="compare-button")
        self.examples(image, self.compare_model, "compare-examples")
        table = gr.Dataframe(label="All methods on this image", interactive=False, wrap=True, elem_id="compare-table")
        outputs: list[gr.components.Component] = []
        with gr.Row():
            for name in self.methods:
                with gr.Column(min_width=240):
                    outputs.append(gr.Markdown(f"### {name}", label=f"{name} verdict"))
                    outputs.append(gr.Image(label=f"{name} heat map", format=PHOTO_FORMAT, interactive=False, height=300))

        @gpu
        @user_errors
        def compare(image: Any, model: str, session: service.SessionModels):
            if image is None:
                raise DataError("no image: upload one or pick an example")
            pixels = load_image(image)  # decoded once for all methods; a bad image fails here, before any model
            rows, shown = [], []
            for method in self.methods:
                try:
                    found = service.detect(pixels, method, model, self.weights_dir, session, with_frames=False)
                except SsadError as error:  # no weights (or not loadable): shown, with the reason
                    rows.append({"method": method, "score": None, "threshold": None, "label": "unavailable",
                                 "seconds": None, "weights": str(error)})
                    shown += [f"### {method}\n**unavailable** — {error}", None]
                    continue
                rows.append(found.summary)
                shown += [f"### {method}\n{page.verdict_html(found)}\n\n**{found.seconds:.2f} s** · weights: {found.summary['weights']}",
                          service.overlay(found)]
            return [pd.DataFrame(rows), *shown]

        button.click(compare, [image, self.compare_model, self.session], [table, *outputs], api_name="compare")

    # ------------------------------------------------------------------ Leaderboard

    def leaderboard_tab(self) -> None:
        gr.Markdown(
            "Figures in percent. **measured** = run here with `python -m ssad evaluate` (provenance: device, input "
            "size, epochs, commit, date); **reported** = quoted from a paper (reference given; hatched, paler bars). "
            "Empty cells are **n/a** and never filled in; a mean is shown only when every category has a figure or the paper gives one."
        )
        with gr.Row():
            dataset = gr.Dropdown([(label, key) for key, label in DATASETS.items()], value="mvtec", label="Dataset", allow_custom_value=True)
            metric = gr.Dropdown([(label, key) for key, label in METRICS.items()], value="image_auroc", label="Metric", allow_custom_value=True)
            sources = gr.CheckboxGroup(list(SOURCES), value=list(SOURCES), label="Source")
        sources_state = gr.State(list(SOURCES))

        @user_errors
        def leaderboard(dataset: str, metric: str, chosen: list[str]) -> pd.DataFrame:
            return display_table(results_table(self.board, choice_id(dataset, DATASETS, "dataset"), choice_id(metric, METRICS, "metric"), tuple(chosen)))

        @user_errors
        def charts(dataset: str, metric: str, chosen: list[str]):
            dataset, metric = choice_id(dataset, DATASETS, "dataset"), choice_id(metric, METRICS, "metric")
            return grouped_bars(self.board, dataset, metric, tuple(chosen)), heatmap(self.board, dataset, metric, tuple(chosen))

        table = gr.Dataframe(
            leaderboard("mvtec", "image_auroc", list(SOURCES)), interactive=False, wrap=True, show_search="filter",
            pinned_columns=2, label="Methods by category", elem_id="leaderboard-table", column_widths=page.column_widths("mvtec"), max_height=640,
        )
        first_bars, first_heat = charts("mvtec", "image_auroc", list(SOURCES))
        bars = gr.Plot(first_bars, label="Per category", elem_id="leaderboard-bars")
        heat = gr.Plot(first_heat, label="Methods by categories", elem_id="leaderboard-heat")
        gr.Markdown(page.problems_markdown(self.board))
        layout = user_errors(lambda d: gr.Dataframe(column_widths=page.column_widths(choice_id(d, DATASETS, "dataset"))))
        gr.on([dataset.change, metric.change], leaderboard, [dataset, metric, sources_state], table, api_name="leaderboard").then(
            layout, dataset, table, api_visibility="private").then(charts, [dataset, metric, sources_state], [bars, heat], api_visibility="private")
        sources.change(lambda chosen: chosen, sources, sources_state, api_visibility="private").then(
            leaderboard, [dataset, metric, sources_state], table, api_visibility="private").then(
            charts, [dataset, metric, sources_state], [bars, heat], api_visibility="private")

    # ------------------------------------------------------------------ Train your own

    def train_tab(self) -> None:
        limits = service.TrainingLimits()
        gr.Markdown(
            f"Upload {limits.min_images} to {limits.max_images} **normal** images (or a zip of them), pick a method "
            f"and train a small model right here ({service.session_sizes()}; stopped after {limits.max_seconds:.0f} s; 16 images take "
            f"1 to 2 minutes). {limits.min_calibration_images} of them are held out to calibrate the threshold "
            "(half, with fewer than 16). It becomes the model `custom/<name>` in the Detect and Compare tabs for "
            "this browser session only."
        )
        with gr.Row():
            files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Normal images or a zip", elem_id="train-files")
            with gr.Column():
                method = gr.Dropdown(self.methods, value=self.methods[0], label="Method", allow_custom_value=True)
                name = gr.Textbox("my-images", label="Name (the model becomes custom/<name>)")
                button = gr.Button("Train", variant="primary", elem_id="train-button")
                status = gr.Markdown("*No model trained in this session yet.*", label="Training", elem_id="train-status", min_height=80)

        @user_errors
        def train(files: list[str] | None, method: str, name: str, session: service.SessionModels, progress=gr.Progress()):
            def report(done: int, total: int, message: str) -> None:
                progress((done, total), desc=message)

            model, trained, check = service.train_session_model(method, name or "my-images", files or [], self.workdir / "train", progress=report)
            session = service.remember(session, model, trained)
            info, warning = trained.info, service.calibration_warning(trained)
            message = (
                f"Trained **{trained.display_name}** as **`{model}`** on {info['n_train']} images "
                f"(+{info['n_held_out']} held out for calibration) in {info['train_seconds']:.1f} s at "
                f"{trained.config.size} px, {trained.config.epochs} epochs.  \n**Self-check:** {check.describe()}.  \n"
                + (f"**⚠ Unreliable:** {warning}  \n" if warning else "")
                + "It is now in the Detect and Compare model lists for this browser session only (it is not saved on the server)."
            )
            choices = service.model_choices(self.weights_dir, session)
            return (message, session, gr.Dropdown(choices=choices, value=model), gr.Dropdown(choices=choices, value=model),
                    gr.Dropdown(value=trained.display_name))

        button.click(train, [files, method, name, self.session], [status, self.session, self.model, self.compare_model, self.detect_method],
                     api_name="train", concurrency_id="train", show_progress_on=status)

    # ------------------------------------------------------------------ About

    def about_tab(self) -> None:
        gr.Markdown(page.ABOUT.format(methods=page.method_blurbs(), repo=service.HUB_REPO, revision=service.HUB_REVISION))
        gr.Markdown(page.unavailable_markdown(self.weights_dir))
        gr.Dataframe(pd.DataFrame(service.availability_table(self.weights_dir)), label="Models and where their weights come from",
                     interactive=False, wrap=True)


def build_demo(weights_dir: Path | None = None, leaderboard_file: Path = RESULTS_FILE) -> gr.Blocks:
    """The whole app as a ``gr.Blocks`` (not launched), over the models in ``weights_dir`` (default ``weights/``)."""
    with gr.Blocks(title="ssad — self-supervised anomaly detection") as demo:
        app = App(weights_dir, leaderboard_file)
        gr.Markdown(
            "# ssad — see how self-supervised anomaly detection finds defects\n"
            f"Methods: {', '.join(app.methods)} · learned from normal images only · scores calibrated on held-out normal images"
        )
        with gr.Tabs(elem_id="tabs"):
            for title, tab_id, build in (("Detect", "detect", app.detect_tab), ("Compare", "compare", app.compare_tab),
                                         ("Leaderboard", "leaderboard", app.leaderboard_tab), ("Train", "train", app.train_tab),
                                         ("About", "about", app.about_tab)):
                with gr.Tab(title, id=tab_id):
                    build()
    return demo


def launch(demo: gr.Blocks, **kwargs: Any):
    """Queue with a concurrency limit and serve, offline, never shared.

    Torch uses ``SSAD_TORCH_THREADS`` threads (default 1): on a small shared CPU, where a detection, a
    session's training and other programs run side by side, two threads per call measured up to 10x
    slower than one (0.27 s vs 3 s per training step, 1.1 s vs 2-16 s per SSM detection on 2 busy cores).
    """
    torch.set_num_threads(int(os.environ.get("SSAD_TORCH_THREADS", "1")))
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo.launch(
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), share=False, theme=THEME, css=page.CSS,
        max_file_size=MAX_UPLOAD, footer_links=["api", "settings"], **kwargs,
    )


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ssad").setLevel(logging.INFO)  # one line per model loaded (models are loaded once, shared)
    launch(build_demo())
