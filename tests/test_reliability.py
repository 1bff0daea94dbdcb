"""Reliability of the served app and the CLI: every bad input gets a clear answer, odd formats work, the
server survives, 8 concurrent clients are all served with bounded memory, corrupt weights are refused."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import REPO_ROOT, serve_app
from ssad import service
from ssad.data import MAX_PIXELS, load_image
from ssad.errors import DataError, SsadError, WeightsError
from ssad.hub import HUB_REPO, HUB_REVISION, resolve_weights
from ssad.methods import METHODS

BOTTLE = REPO_ROOT / "examples" / "mvtec" / "bottle" / "broken_large_000.png"
METHOD = next(iter(METHODS.values()))
PIL_BOMB_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
"""Pillow refuses to open an image above this many pixels (DecompressionBombError) before ssad sees it."""


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def write_inputs(folder: Path) -> dict[str, Path]:
    """Every bad and odd input, as files named after the case."""
    folder.mkdir(parents=True, exist_ok=True)
    bottle = Image.open(BOTTLE).convert("RGB").resize((96, 64))
    files: dict[str, Path] = {}

    def save(name: str, picture: Image.Image, **options) -> None:
        files[name.split(".")[0]] = folder / name
        picture.save(folder / name, **options)

    (folder / "not_an_image.png").write_text("not an image at all")
    files["not_an_image"] = folder / "not_an_image.png"
    png, jpeg = io.BytesIO(), io.BytesIO()
    bottle.save(png, "PNG")
    bottle.save(jpeg, "JPEG", quality=90)
    (folder / "truncated_png.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "truncated_jpeg.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    files["truncated_png"], files["truncated_jpeg"] = folder / "truncated_png.png", folder / "truncated_jpeg.jpg"
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    (folder / "bomb.png").write_bytes(png_declaring(8000, 8000))  # above ssad's MAX_PIXELS, below Pillow's limit
    (folder / "pillow_bomb.png").write_bytes(png_declaring(20000, 20000))  # above Pillow's own limit too
    files["bomb"], files["pillow_bomb"] = folder / "bomb.png", folder / "pillow_bomb.png"

    grey = np.asarray(bottle.convert("L"), dtype=np.uint16) * 257
    save("sixteen_bit.png", Image.fromarray(grey))
    save("greyscale.png", bottle.convert("L"))
    rgba = bottle.convert("RGBA")
    rgba.putalpha(200)
    save("rgba.png", rgba)
    save("cmyk.jpg", bottle.convert("CMYK"), quality=90)
    save("palette.png", bottle.convert("P", palette=Image.ADAPTIVE, colors=64))
    second = bottle.transpose(Image.FLIP_LEFT_RIGHT)
    save("animated.gif", bottle, save_all=True, append_images=[second], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to show upright
    save("exif_rotated.jpg", bottle, exif=exif, quality=90)
    return files


BAD = {  # case -> the message the user gets (app and CLI)
    "not_an_image": r"not_an_image\.png: not a(n| readable) image",
    "truncated_png": r"truncated_png\.png: corrupt or truncated",
    "truncated_jpeg": r"truncated_jpeg\.jpg: corrupt or truncated",
    "one_pixel": r"1x1 pixels is too small",
    "bomb": rf"8000x8000 pixels is above the limit of {MAX_PIXELS:,} pixels",
}
ODD = ["sixteen_bit", "greyscale", "rgba", "cmyk", "palette", "animated", "exif_rotated"]


@pytest.fixture(scope="module")
def weights(tiny_weights, tmp_path_factory) -> Path:
    """The tiny weights, plus a copy of the first method's model as ``mvtec/pill`` with one byte flipped."""
    root = tmp_path_factory.mktemp("reliability") / "weights"
    shutil.copytree(tiny_weights, root)
    corrupt = root / METHOD.id / "mvtec" / "pill"
    shutil.copytree(root / METHOD.id / "mvtec" / "bottle", corrupt)
    data = bytearray((corrupt / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (corrupt / "model.safetensors").write_bytes(bytes(data))
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    """One ``python app.py`` over ``weights`` for this module: (process, url, log file)."""
    log = tmp_path_factory.mktemp("server") / "app.log"
    process, url = serve_app(weights, log)
    yield process, url, log
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[1], verbose=False)


def detect(client: Client, image: Path, method: str = METHOD.display_name, model: str = "mvtec/bottle") -> list:
    return client.submit(handle_file(image), method, model, api_name="/detect").result(timeout=180)


def assert_still_serving(client: Client) -> None:
    score = detect(client, BOTTLE)[0]
    assert isinstance(score, float) and np.isfinite(score)


# ---------------------------------------------------------------------- bad input: the served app


@pytest.mark.parametrize("case", list(BAD))
def test_app_answers_bad_image_with_clear_error_then_serves(client, inputs, case):
    with pytest.raises(AppError, match=BAD[case]):
        detect(client, inputs[case])
    assert_still_serving(client)


def test_app_refuses_image_beyond_pillow_limit_from_its_header(client, inputs, server):
    started = time.monotonic()
    with pytest.raises(AppError, match=r"pillow_bomb\.png: image too large .*400000000 pixels"):
        detect(client, inputs["pillow_bomb"])
    assert time.monotonic() - started < 30  # refused from the header, not decoded
    assert psutil.Process(server[0].pid).memory_info().rss < 2e9  # 400 Mpx decoded would be 1.2 GB
    assert_still_serving(client)


@pytest.mark.parametrize("case", ODD)
def test_app_converts_odd_formats_like_the_library(client, inputs, weights, case):
    outputs = detect(client, inputs[case])
    expected = service.detect(inputs[case], METHOD.display_name, "mvtec/bottle", weights)
    assert outputs[0] == pytest.approx(expected.result.score, rel=1e-4, abs=1e-4)
    shown = Image.open(outputs[4]["image"])  # the mask's background is the decoded image
    assert shown.size == (expected.image.shape[1], expected.image.shape[0])


def test_library_conversion_rules_for_odd_formats(inputs):
    reference = load_image(inputs["greyscale"])
    assert load_image(inputs["exif_rotated"]).shape == (96, 64, 3)  # upright: 64x96 turned a quarter
    np.testing.assert_array_equal(load_image(inputs["sixteen_bit"]), reference)  # 65535 -> 255
    assert (reference[..., 0] == reference[..., 2]).all()  # grey copied to three channels
    rgba = load_image(inputs["rgba"])  # composited over black at alpha 200/255
    opaque = load_image(inputs["cmyk"]).astype(int)
    assert rgba.shape == opaque.shape == (64, 96, 3) and rgba.mean() < opaque.mean()
    first_frame = np.asarray(Image.open(BOTTLE).convert("RGB").resize((96, 64)))
    assert np.abs(load_image(inputs["animated"]).astype(int) - first_frame).mean() < 12  # first frame, GIF palette
    assert load_image(inputs["palette"]).shape == (64, 96, 3)


def test_app_answers_unknown_method_and_model(client):
    with pytest.raises(AppError, match="unknown method 'PatchCore'; choose one of"):
        detect(client, BOTTLE, method="PatchCore")
    with pytest.raises(AppError, match=r"no weights for .*mvtec/zipper"):
        detect(client, BOTTLE, model="mvtec/zipper")
    with pytest.raises(AppError, match="not of the form dataset/category"):
        detect(client, BOTTLE, model="../../etc/passwd")
    assert_still_serving(client)


# ---------------------------------------------------------------------- bad input: the CLI


def run_cli(*args: str, weights: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if weights is not None:
        env["SSAD_WEIGHTS_DIR"] = str(weights)
    return subprocess.run([sys.executable, "-m", "ssad", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(done: subprocess.CompletedProcess, pattern: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(pattern, lines[0]), done.stderr[-2000:]


@pytest.mark.parametrize("case", list(BAD))
def test_cli_predict_bad_image_exits_2_with_one_line(weights, inputs, case):
    assert_one_line_error(run_cli("predict", "--method", METHOD.id, "--model", "mvtec/bottle", str(inputs[case]), weights=weights), BAD[case])


def test_cli_predict_image_beyond_pillow_limit_exits_2(weights, inputs):
    assert_one_line_error(run_cli("predict", "--method", METHOD.id, "--model", "mvtec/bottle", str(inputs["pillow_bomb"]), weights=weights), "pixels")


def test_cli_predict_odd_formats_unknown_method_and_model(weights, inputs):
    for case in ODD:
        done = run_cli("predict", "--method", METHOD.id, "--model", "mvtec/bottle", str(inputs[case]), weights=weights)
        assert done.returncode == 0, f"{case}: {done.stderr[-2000:]}"
        expected = service.detect(inputs[case], METHOD.display_name, "mvtec/bottle", weights).result.score
        assert json.loads(done.stdout)["score"] == pytest.approx(expected, rel=1e-4, abs=1e-4), case
    assert_one_line_error(run_cli("predict", "--method", "patchcore", "--model", "mvtec/bottle", str(BOTTLE), weights=weights), "unknown method 'patchcore'")
    assert_one_line_error(run_cli("predict", "--method", METHOD.id, "--model", "mvtec/zipper", str(BOTTLE), weights=weights), r"no weights for .*mvtec/zipper")
    assert_one_line_error(run_cli("predict", "--method", METHOD.id, "--model", "mvtec/pill", str(BOTTLE), weights=weights), r"pill/model\.safetensors: sha256 does not match")


# ---------------------------------------------------------------------- weights integrity


def test_corrupt_model_is_unavailable_with_the_reason_and_the_app_keeps_serving(client, weights):
    reason = r"mvtec/pill/model\.safetensors: sha256 does not match config\.json"
    status = service.availability(METHOD.display_name, "mvtec/pill", weights)
    assert not status.available and re.search(reason, status.describe()) and status.describe().startswith("unavailable")
    about = {(row["method"], row["model"]): row["weights"] for row in service.availability_table(weights)}
    assert re.search(reason, about[(METHOD.display_name, "mvtec/pill")])
    assert about[(METHOD.display_name, "mvtec/bottle")].startswith("embedded")
    with pytest.raises(AppError, match=reason):
        detect(client, BOTTLE, model="mvtec/pill")
    table = client.submit(handle_file(BOTTLE), "mvtec/pill", api_name="/compare").result(timeout=180)[0]
    rows = {row[0]: row for row in table["data"]}
    assert rows[METHOD.display_name][3] == "unavailable" and re.search(reason, rows[METHOD.display_name][5])
    assert_still_serving(client)


def test_hub_lookups_are_pinned_to_the_revision(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def fake_download(repo_id, filename, **options):
        calls.append({"repo_id": repo_id, **options})
        raise LocalEntryNotFoundError("not here")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(WeightsError, match=re.escape(f"{HUB_REPO}@{HUB_REVISION}")):
        resolve_weights("ssm", "mvtec/none", weights_dir=tmp_path)
    assert {call["local_files_only"] for call in calls} == {True, False}  # the cache, then a download
    assert all(call["repo_id"] == HUB_REPO and call["revision"] == HUB_REVISION for call in calls)


# ---------------------------------------------------------------------- load


@pytest.mark.slow
def test_eight_clients_three_detections_each_are_all_answered(server):
    process, url, log = server
    methods = [cls.display_name for cls in METHODS.values()]
    peak = [psutil.Process(process.pid).memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], psutil.Process(process.pid).memory_info().rss)

    def one_client(index: int) -> list[float]:
        user = Client(url, verbose=False)
        jobs = [user.submit(handle_file(BOTTLE), methods[(index + k) % len(methods)], "mvtec/bottle", api_name="/detect") for k in range(3)]
        return [job.result(timeout=300)[0] for job in jobs]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = [score for scores in pool.map(one_client, range(8), timeout=420) for score in scores]
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    print(f"\nload test: {len(answers)} /detect answers from 8 clients in {seconds:.1f} s; server peak RSS {peak[0] / 2**20:.0f} MiB")
    assert len(answers) == 24 and all(isinstance(score, float) and np.isfinite(score) for score in answers)
    assert peak[0] < 3 * 2**30
    loads = re.findall(r"loaded model (\S+ \S+) from", log.read_text())
    assert sorted(set(loads)) == sorted(f"{cls.id} mvtec/bottle" for cls in METHODS.values())
    assert len(loads) == len(set(loads))  # each model loaded once, shared by all requests


# ---------------------------------------------------------------------- training inputs


@pytest.fixture(scope="module")
def training_folders(tmp_path_factory) -> Path:
    """empty/, one/ (one image), unreadable/ (four good images and a broken one), mixed/ (four sizes)."""
    root = tmp_path_factory.mktemp("training")
    rng = np.random.default_rng(0)
    for name, sizes in {"empty": [], "one": [(40, 40)], "unreadable": [(40, 40)] * 4, "mixed": [(40, 40), (64, 48), (100, 30), (33, 90)]}.items():
        (root / name).mkdir()
        for i, (width, height) in enumerate(sizes):
            Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    (root / "unreadable" / "broken.png").write_text("junk")
    return root


@pytest.mark.parametrize("case, pattern", [
    ("empty", "not a dataset folder"),
    ("one", "at least 2 normal training images are needed, found 1"),
    ("unreadable", r"broken\.png: (not an image|unreadable image)"),  # the input shape reads image headers first
    ("missing", "no such folder"),
])
def test_cli_train_bad_folders_exit_2_with_one_line(training_folders, tmp_path, case, pattern):
    done = run_cli("train", "--method", METHOD.id, "--data", str(training_folders / case), "--out", str(tmp_path / "w"), "--size", "32", "--epochs", "1")
    assert done.returncode == 2 and re.search(pattern, done.stderr.strip().splitlines()[-1]), done.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_cli_train_on_mixed_sizes_works(training_folders, tmp_path):
    done = run_cli("train", "--method", METHOD.id, "--data", str(training_folders / "mixed"), "--out", str(tmp_path / "w"), "--size", "32", "--epochs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["model"] == "custom/mixed"
    assert METHOD.load(tmp_path / "w").config.size == 32


def test_train_tab_refuses_bad_uploads_and_keeps_serving(client, training_folders, inputs):
    good = [handle_file(path) for path in sorted((training_folders / "unreadable").glob("[0-9].png"))]
    with pytest.raises(AppError, match=r"broken\.png: not an image"):
        client.predict([*good, handle_file(training_folders / "unreadable" / "broken.png")], METHOD.display_name, "x", api_name="/train")
    with pytest.raises(AppError, match="at least 4 normal images"):
        client.predict(good[:1], METHOD.display_name, "x", api_name="/train")
    with pytest.raises(AppError, match=r"one_pixel\.png: 1x1 pixels is too small"):
        client.predict([*good, handle_file(inputs["one_pixel"])], METHOD.display_name, "x", api_name="/train")
    limits = service.TrainingLimits()
    with pytest.raises(AppError, match=rf"above the limit of {limits.max_pixels_per_image:,} pixels"):
        client.predict([*good, handle_file(inputs["bomb"])], METHOD.display_name, "x", api_name="/train")
    with pytest.raises(AppError, match=f"too many images: at most {limits.max_images}"):
        client.predict(good * (limits.max_images // len(good) + 1), METHOD.display_name, "x", api_name="/train")
    assert_still_serving(client)


def test_train_limits_on_bytes_and_time_and_mixed_sizes(training_folders, tmp_path):
    images = sorted((training_folders / "mixed").glob("*.png"))
    with pytest.raises(DataError, match="larger than 0 MB"):
        service.collect_training_images(images, tmp_path / "bytes", service.TrainingLimits(max_upload_bytes=10_000))
    quick = service.TrainingLimits(step_scale=0.005)  # one optimiser step or so: the wiring, not the model
    with pytest.raises(SsadError, match="ran past the limit of 0 s"):
        service.train_session_model(METHOD.display_name, "slow", images, tmp_path / "time", service.TrainingLimits(max_seconds=0))
    model, trained, _ = service.train_session_model(METHOD.display_name, "mixed sizes", images, tmp_path / "mixed", quick)
    assert model == "custom/mixed-sizes" and trained.info["n_train"] + trained.info["n_held_out"] == 4
    assert np.isfinite(trained.predict(load_image(images[2]), with_frames=False).score)


# ---------------------------------------------------------------------- leaderboard input


def test_malformed_leaderboard_rows_are_listed_with_line_and_the_tab_still_works(tiny_weights, tmp_path):
    import gradio as gr

    import app
    from ssad.leaderboard import COLUMNS, load_leaderboard

    good = "DRAEM,mvtec,bottle,image_auroc,0.992,reported,DRAEM paper,,,,,,,,"
    lines = [
        ",".join(COLUMNS), good,
        "DRAEM,mvtec,cable,image_auroc,0.918,reported",  # short row
        good + ",extra",  # one field too many
        good,  # duplicate
        "\x00\x01garbage",  # not a row at all
        "DRAEM,mvtec,capsule,image_auroc,0.985,reported,DRAEM paper,,,,,,,,",
    ]
    results = tmp_path / "results.csv"
    results.write_text("\n".join(lines) + "\n")
    board = load_leaderboard(results)
    assert list(board.rows["category"]) == ["bottle", "capsule"]
    assert board.problems == [
        "results.csv:3: wrong number of fields",
        "results.csv:4: wrong number of fields",
        "results.csv:5: duplicates line 2 (DRAEM, mvtec, bottle, image_auroc, reported)",
        "results.csv:6: wrong number of fields",
    ]
    demo = app.build_demo(tiny_weights, results)
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown) and isinstance(block.value, str)]
    assert any("4 row(s)" in text and all(problem in text for problem in board.problems) for text in texts)
    table = next(block.value for block in demo.blocks.values() if isinstance(block, gr.Dataframe) and block.elem_id == "leaderboard-table")
    assert table["data"][0][:5] == ["DRAEM", "reported", "99.2", "n/a", "98.5"]

    (tmp_path / "no_columns.csv").write_text("method,value\nDRAEM,0.9\n")
    assert "no_columns.csv:1: missing columns dataset" in load_leaderboard(tmp_path / "no_columns.csv").problems[0]
    assert "cannot read" in load_leaderboard(tmp_path / "absent.csv").problems[0]
    empty = app.build_demo(tiny_weights, tmp_path / "absent.csv")  # the app still starts without a results file
    assert isinstance(empty, gr.Blocks)
