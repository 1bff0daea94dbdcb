"""The app over HTTP: ``python app.py`` served on a local port, driven with gradio_client like any user script."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from ssad import service
from ssad.data import open_dataset
from ssad.errors import DataError
from ssad.leaderboard import CATEGORIES, CATEGORY_LABELS
from ssad.methods import METHODS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BOTTLE = EXAMPLES / "mvtec" / "bottle" / "broken_large_000.png"


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


def test_named_endpoints_follow_the_contract(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/detect", "/compare", "/leaderboard", "/train"}
    assert [p["parameter_name"] for p in endpoints["/detect"]["parameters"]] == ["image", "method", "model"]
    assert [p["parameter_name"] for p in endpoints["/leaderboard"]["parameters"]] == ["dataset", "metric"]
    assert len(endpoints["/leaderboard"]["returns"]) == 1
    labels = [r["label"] for r in endpoints["/detect"]["returns"]]
    assert labels[:2] == ["Image score", "Label"] and all(label and not label.startswith("value_") for label in labels), labels


@pytest.mark.parametrize("method", [cls.display_name for cls in METHODS.values()])
def test_detect_returns_score_overlay_mask_and_animation(client, tiny_weights, method):
    outputs = client.predict(handle_file(BOTTLE), method, "mvtec/bottle", api_name="/detect")
    score, label, verdict, overlay, mask, gif = outputs[:6]
    # The served score is the library's score for the same image and weights.
    expected = service.detect(BOTTLE, method, "mvtec/bottle", tiny_weights)
    assert isinstance(score, float) and score == pytest.approx(expected.result.score, rel=1e-4, abs=1e-4)
    assert label == expected.result.label and service.verdict_sentence(expected) in verdict
    overlay_image = Image.open(overlay)
    assert overlay_image.format == "WEBP" and overlay_image.height == 256 and overlay_image.width > 256  # + colour bar
    assert Path(mask["image"]).is_file() and mask["annotations"][0]["label"] == service.MASK_LABEL
    if expected.result.frames:
        animation = Image.open(gif)
        assert animation.format == "GIF" and animation.n_frames == len(expected.result.frames)
    details = outputs[9]
    assert "wall time" in details and "embedded" in details and "mvtec/bottle" in details
    assert str(tiny_weights) not in details  # no server path in the page


def test_compare_shows_every_method_and_unavailable_ones_with_the_reason(client):
    table = client.predict(handle_file(BOTTLE), "mvtec/bottle", api_name="/compare")[0]
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {cls.display_name for cls in METHODS.values()}
    assert all(row[3] in ("normal", "anomalous") for row in rows.values())

    table = client.predict(handle_file(BOTTLE), "mvtec/pill", api_name="/compare")[0]
    assert len(table["data"]) == len(METHODS)
    for row in table["data"]:
        assert row[3] == "unavailable" and row[1] is None
        assert "no weights for" in row[5] and "mvtec/pill" in row[5]


def test_leaderboard_tables_for_both_datasets(client):
    table = client.predict("mvtec", "image_auroc", api_name="/leaderboard")
    assert table["headers"][:2] == ["method", "source"]
    assert table["headers"][2:17] == [CATEGORY_LABELS.get(c, c) for c in CATEGORIES["mvtec"]]
    assert "cable, this copy's split" in table["headers"] and table["headers"][-2:] == ["mean", "provenance"]
    assert {row[1] for row in table["data"]} <= {"measured", "reported"} and table["data"]
    for row in table["data"]:
        assert all(cell == "n/a" or 0 <= float(cell) <= 100 for cell in row[2:18])
    by_label = client.predict("MVTec AD", "Image AUROC", api_name="/leaderboard")
    assert by_label["data"] == table["data"]
    oct_table = client.predict("oct", "image_auroc", api_name="/leaderboard")
    assert "Kermany OCT, this split" in oct_table["headers"]
    with pytest.raises(AppError, match="unknown metric 'accuracy'"):
        client.predict("mvtec", "accuracy", api_name="/leaderboard")


def test_train_then_detect_with_the_session_model_only_in_that_session(client, app_url, synthetic_category, tmp_path):
    normals = [sample.path for sample in open_dataset(synthetic_category).train][:6]
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in normals[4:]:
            bundle.write(path, f"nested/{path.name}")
    method = next(iter(METHODS.values())).display_name
    files = [handle_file(path) for path in normals[:4]] + [handle_file(archive)]
    status = client.predict(files, method, "Widgets 1", api_name="/train")[0]
    assert "custom/widgets-1" in status and "on 3 images" in status  # 6 images: 3 trained on, 3 held out
    assert "Self-check" in status and "Unreliable" in status  # 3 held-out images are too few to trust

    score = client.predict(handle_file(normals[0]), method, "custom/widgets-1", api_name="/detect")[0]
    assert isinstance(score, float) and np.isfinite(score)
    stranger = Client(app_url, verbose=False)  # another browser session does not see the model
    with pytest.raises(AppError, match="no weights for .*custom/widgets-1"):
        stranger.predict(handle_file(normals[0]), method, "custom/widgets-1", api_name="/detect")


def test_bad_inputs_are_clear_errors_and_the_server_keeps_serving(client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(BOTTLE.read_bytes()[:4000])
    method = next(iter(METHODS.values())).display_name
    with pytest.raises(AppError, match="notes.png: not a readable image"):
        client.predict(handle_file(text), method, "mvtec/bottle", api_name="/detect")
    with pytest.raises(AppError, match="corrupt or truncated|not a readable image"):
        client.predict(handle_file(truncated), method, "mvtec/bottle", api_name="/detect")
    with pytest.raises(AppError, match="unknown method 'PatchCore'"):
        client.predict(handle_file(BOTTLE), "PatchCore", "mvtec/bottle", api_name="/detect")
    with pytest.raises(AppError, match="not of the form dataset/category"):
        client.predict(handle_file(BOTTLE), method, "../../etc", api_name="/detect")
    with pytest.raises(AppError, match="no weights for .*mvtec/zipper"):
        client.predict(handle_file(BOTTLE), method, "mvtec/zipper", api_name="/detect")
    with pytest.raises(AppError, match="at least 4 normal images"):
        client.predict([handle_file(BOTTLE)], method, "tiny", api_name="/train")
    assert isinstance(client.predict(handle_file(BOTTLE), method, "mvtec/bottle", api_name="/detect")[0], float)


def test_training_upload_limits(tmp_path):
    limits = service.TrainingLimits(max_images=3, min_images=2)
    pictures = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), i * 40, np.uint8)).save(path)
        pictures.append(path)
    with pytest.raises(DataError, match="at most 3"):
        service.collect_training_images(pictures, tmp_path / "a", limits)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as bundle:
        bundle.writestr("../../evil.png", pictures[0].read_bytes())
        bundle.writestr("readme.txt", "skipped")
        bundle.writestr("x/1.png", pictures[1].read_bytes())
    (tmp_path / "b.zip").write_bytes(bomb.getvalue())
    folder = service.collect_training_images([tmp_path / "b.zip"], tmp_path / "b", limits)
    assert sorted(p.name for p in folder.iterdir()) == ["000-evil.png", "001-1.png"]
    assert not (tmp_path / "evil.png").exists()
    with pytest.raises(DataError, match="upload images"):
        service.collect_training_images([Path(__file__)], tmp_path / "c", limits)


def test_sensitivity_rethresholds_the_stored_map_without_the_network(tiny_weights):
    detection = service.detect(BOTTLE, next(iter(METHODS.values())).display_name, "mvtec/bottle", tiny_weights)
    shares = [service.mask_share(detection, s) for s in (0.25, 1.0, 4.0)]
    assert shares == sorted(shares)
    image, [(mask, label)] = service.mask_annotation(detection, 1.0)
    assert mask.shape == image.shape[:2] and label == service.MASK_LABEL
    np.testing.assert_array_equal(mask > 0.5, detection.result.calibrated_map() > 1.0)


def test_training_config_follows_the_recipe_and_holds_out_enough_to_calibrate():
    limits = service.TrainingLimits()
    assert [service.held_out_count(n, limits) for n in (4, 6, 16, 32)] == [2, 3, 8, 8]
    for method_id, recipe in service.SESSION_RECIPE.items():
        name = METHODS[method_id].display_name
        few, many = service.training_config(name, 6, limits), service.training_config(name, 32, limits)
        assert few.size == many.size == recipe["size"] and few.epochs >= many.epochs
        steps = many.epochs * -(-24 // recipe["batch_size"])
        assert steps >= recipe["steps"] > steps - -(-24 // recipe["batch_size"])


def test_one_progress_bar_across_sgsf_stages():
    seen = []
    bar = service.StagedProgress([(("reconstruction",), 1), (("segmentation",), 3)], lambda done, total, message: seen.append(done / total))
    bar(5, 10, "loading images")
    for done in (1, 2):
        bar(done, 2, f"reconstruction {done}/2 loss 0.1")
    for done in (1, 2, 3):
        bar(done, 3, f"segmentation {done}/3 loss 0.1")
    assert seen == sorted(seen) and seen[0] == 0 and seen[2] == pytest.approx(0.25) and seen[-1] == 1


def test_device_is_read_inside_each_call(monkeypatch, tiny_weights):
    """ZeroGPU: the GPU exists only inside the decorated call, so the device is chosen there, not at import."""
    import torch

    from ssad.service import models

    asked = []
    monkeypatch.setattr(models, "load_model", lambda method, model, device, weights_dir: asked.append(device) or (_ for _ in ()).throw(RuntimeError("stop")))
    for available in (False, True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert service.current_device().type == ("cuda" if available else "cpu")
        with pytest.raises(RuntimeError, match="stop"):
            service.get_model("SSM", "mvtec/bottle", tiny_weights)
    assert [device.type for device in asked] == ["cpu", "cuda", "cpu"]


def test_only_models_with_weights_are_offered(tiny_weights):
    assert service.model_choices(tiny_weights) == ["mvtec/bottle"]
    assert [model for _, model in service.models_with_weights(tiny_weights)] == ["mvtec/bottle"] * len(METHODS)
    rows = service.availability_table(tiny_weights)
    assert any(row["model"] == "mvtec/zipper" and row["weights"].startswith("unavailable") for row in rows)


def test_a_kolektorsdd_scan_keeps_its_aspect_through_the_app(client, tiny_weights):
    scan = Path(__file__).resolve().parents[1] / "examples" / "kolektorsdd" / "commutator" / "defect_kos48-Part5.png"
    width, height = Image.open(scan).size  # about 205 x 512
    outputs = client.predict(handle_file(scan), next(iter(METHODS.values())).display_name, "mvtec/bottle", api_name="/detect")
    mask = Image.open(outputs[4]["image"])
    assert mask.size == (width, height)  # below the display size: the scan's own pixels, not a square
    full = service.detect(scan, next(iter(METHODS.values())).display_name, "mvtec/bottle", tiny_weights)
    assert full.result.anomaly_map.shape == (height, width)


def test_pictures_are_sent_at_display_size_and_the_full_map_is_a_file(tiny_weights, tmp_path):
    big = tmp_path / "big.jpg"
    Image.open(BOTTLE).convert("RGB").resize((3000, 2000)).save(big, quality=90)
    detection = service.detect(big, next(iter(METHODS.values())).display_name, "mvtec/bottle", tiny_weights)
    assert detection.image.shape[:2] == (1365, 2048)  # scored at WORKING_MAX: no model needs more
    height = detection.picture.shape[0]
    assert detection.picture.shape[:2] == (height, 1024) and abs(height - 683) <= 1
    assert service.overlay(detection).shape[0] == height
    picture, [(mask, _)] = service.mask_annotation(detection)
    assert picture.shape[:2] == mask.shape == (height, 1024)
    with Image.open(service.full_resolution_map(detection, tmp_path)) as full:
        assert full.size == (3000, 2000)


def test_every_methods_gif_shows_only_what_each_frame_draws(tiny_weights, tmp_path):
    from test_result_viz import decoded_frames
    from ssad.viz import render_frame

    for cls in METHODS.values():
        detection = service.detect(BOTTLE, cls.display_name, "mvtec/bottle", tiny_weights)
        decoded = decoded_frames(service.animation(detection, tmp_path))
        assert len(decoded) == len(detection.result.frames) > 0
        for frame, shown in zip(detection.result.frames, decoded):
            drawn = render_frame(frame, detection.result.calibration, service.ANIMATION_PANEL).astype(int)
            height, width = drawn.shape[:2]
            assert np.abs(shown[:height, :width] - drawn).max() < 60, cls.display_name
            assert (shown[height:] >= 240).all() and (shown[:, width:] >= 240).all(), cls.display_name


def test_an_anomalous_image_with_an_empty_mask_says_why(tiny_weights):
    import dataclasses

    detection = service.detect(BOTTLE, next(iter(METHODS.values())).display_name, "mvtec/bottle", tiny_weights)
    calibration = detection.result.calibration
    quiet = dataclasses.replace(detection, result=dataclasses.replace(
        detection.result, score=calibration.image_threshold + 1, anomaly_map=np.full_like(detection.result.anomaly_map, calibration.pixel_mean)))
    assert quiet.result.is_anomalous and service.mask_share(quiet) == 0
    assert "no single pixel passes the pixel threshold" in service.empty_mask_reason(quiet)
    assert service.empty_mask_reason(detection) is None or detection.result.is_anomalous


def test_leaderboard_charts_distinguish_methods_and_sources():
    from ssad.leaderboard import grouped_bars, heatmap, load_leaderboard

    board = load_leaderboard()
    bars = grouped_bars(board, "mvtec", "image_auroc")
    colours = {trace.name.rsplit(" (", 1)[0]: trace.marker.color for trace in bars.data}
    assert len(set(colours.values())) == len(colours)  # one colour per method, none repeated
    for trace in bars.data:
        assert (trace.marker.pattern.shape == "/") == trace.name.endswith("(reported)")
    assert heatmap(board, "mvtec", "image_auroc", ("measured",)).data[0].zmin == heatmap(board, "mvtec", "image_auroc").data[0].zmin
    empty = grouped_bars(board, "oct", "pixel_ap", ("measured",))
    assert not empty.data and "No figures" in empty.layout.annotations[0].text


def test_leaderboard_tab_reports_rejected_rows(tmp_path, tiny_weights):
    import gradio as gr

    import app
    from ssad.leaderboard import COLUMNS

    results = tmp_path / "results.csv"
    good = "DRAEM,mvtec,bottle,image_auroc,0.992,reported,DRAEM paper,,,,,,,,"
    percent = "DRAEM,mvtec,cable,image_auroc,91.8,reported,DRAEM paper,,,,,,,,"
    results.write_text("\n".join([",".join(COLUMNS), good, percent]) + "\n")
    demo = app.build_demo(tiny_weights, results)
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown) and isinstance(block.value, str)]
    assert any("1 row(s)" in text and "results.csv:3: value 91.8 is outside [0, 1]" in text for text in texts)
    tables = [block.value for block in demo.blocks.values() if isinstance(block, gr.Dataframe) and block.elem_id == "leaderboard-table"]
    assert tables[0]["data"][0][:4] == ["DRAEM", "reported", "99.2", "n/a"]
