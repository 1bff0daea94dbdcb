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
from ssad.leaderboard import CATEGORIES
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


@pytest.mark.parametrize("method", [cls.display_name for cls in METHODS.values()])
def test_detect_returns_score_overlay_mask_and_animation(client, tiny_weights, method):
    outputs = client.predict(handle_file(BOTTLE), method, "mvtec/bottle", api_name="/detect")
    score, verdict, overlay, mask, gif = outputs[:5]
    # The served score is the library's score for the same image and weights.
    expected = service.detect(BOTTLE, method, "mvtec/bottle", tiny_weights)
    assert isinstance(score, float) and score == pytest.approx(expected.result.score, rel=1e-4, abs=1e-4)
    assert expected.result.label.capitalize() in verdict and f"{expected.result.threshold:.3f}" in verdict
    overlay_image = Image.open(overlay)
    assert overlay_image.format == "PNG" and overlay_image.height == 256 and overlay_image.width > 256  # + colour bar
    assert Path(mask["image"]).is_file() and mask["annotations"][0]["label"] == service.MASK_LABEL
    if expected.result.frames:
        animation = Image.open(gif)
        assert animation.format == "GIF" and animation.n_frames == len(expected.result.frames)
    details = outputs[8]
    assert "wall time" in details and "embedded" in details and str(tiny_weights) in details


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
    assert table["headers"][2:17] == CATEGORIES["mvtec"] and table["headers"][-2:] == ["mean", "provenance"]
    assert {row[1] for row in table["data"]} <= {"measured", "reported"} and table["data"]
    for row in table["data"]:
        assert all(cell == "n/a" or 0 <= float(cell) <= 100 for cell in row[2:18])
    by_label = client.predict("MVTec AD", "Image AUROC", api_name="/leaderboard")
    assert by_label["data"] == table["data"]
    oct_table = client.predict("oct", "image_auroc", api_name="/leaderboard")
    assert any(header.startswith("retina") for header in oct_table["headers"])
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
    assert "custom/widgets-1" in status and "on 4 images" in status  # 6 images: 4 trained on, 2 held out

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


def test_training_config_aims_at_a_fixed_number_of_steps():
    limits = service.TrainingLimits()
    name = next(iter(METHODS.values())).display_name
    few, many = service.training_config(name, 6, limits), service.training_config(name, 32, limits)
    assert few.epochs == limits.max_epochs and few.size == limits.size
    assert many.epochs * -(-24 // limits.batch_size) >= limits.target_steps > (many.epochs - 1) * 6


def test_leaderboard_tab_reports_rejected_rows(tmp_path, tiny_weights):
    import gradio as gr

    import app
    from ssad.leaderboard import COLUMNS

    results = tmp_path / "results.csv"
    good = "DRAEM,mvtec,bottle,image_auroc,0.992,reported,DRAEM paper,,,,,,,"
    percent = "DRAEM,mvtec,cable,image_auroc,91.8,reported,DRAEM paper,,,,,,,"
    results.write_text("\n".join([",".join(COLUMNS), good, percent]) + "\n")
    demo = app.build_demo(tiny_weights, results)
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown) and isinstance(block.value, str)]
    assert any("1 row(s)" in text and "results.csv:3: value 91.8 is outside [0, 1]" in text for text in texts)
    tables = [block.value for block in demo.blocks.values() if isinstance(block, gr.Dataframe) and block.elem_id == "leaderboard-table"]
    assert tables[0]["data"][0][:4] == ["DRAEM", "reported", "99.2", "n/a"]
