"""Publish and pull meet: ``ssad publish`` uploads to a local Hub stand-in, then the app cold-starts from it.

The app runs as ``python app.py`` with no embedded weights, an empty Hugging Face cache and
``HF_ENDPOINT`` at the stand-in: ``/detect`` must answer with weights downloaded from the Hub, and again,
restarted offline, from the Hub cache. A stand-in that serves bytes whose sha256 is not the one recorded
in ``config.json`` must make ``/detect`` fail with the loader's clear error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parents[1]
REPO = "ssad-test/ssad-weights"
TAG = "v0.1.0"
MODEL = "st-ssad/mvtec/bottle"  # the fastest method to score an image on one CPU thread
IMAGE = ROOT / "examples" / "mvtec" / "bottle"
STARTUP_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _hub_env(hub: HubStandIn, home: Path, offline: bool) -> dict[str, str]:
    """Environment of a process talking to the stand-in (huggingface_hub reads these once, at import)."""
    return {
        **os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "hf_standin",
        "SSAD_HUB_REPO": REPO, "SSAD_HUB_REVISION": TAG, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
    }


def publish(hub: HubStandIn, home: Path) -> str:
    """``python -m ssad publish`` to the stand-in; the commit sha it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "ssad", "publish", "--repo", REPO, "--models", MODEL],
        capture_output=True, text=True, env=_hub_env(hub, home, offline=False), cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def app(hub: HubStandIn, home: Path, weights: Path, offline: bool) -> Iterator[Client]:
    """``python app.py`` on a free port with no embedded weights; a client once it serves; stopped after."""
    port = _free_port()
    env = {**_hub_env(hub, home, offline), "SSAD_WEIGHTS_DIR": str(weights), "GRADIO_SERVER_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}: {process.stderr.read()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not serve within {STARTUP_SECONDS} s")
                time.sleep(0.5)
        yield Client(url, verbose=False)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def detect(client: Client) -> str:
    """The weights line of ``/detect``'s details for an example bottle image."""
    image = sorted(IMAGE.glob("*.png"))[0]
    outputs = client.predict(handle_file(str(image)), "ST-SSAD", "mvtec/bottle", api_name="/detect")
    return next(value for value in outputs if isinstance(value, str) and "**Weights:**" in value)


@pytest.fixture
def hub(tmp_path) -> Iterator[HubStandIn]:
    with HubStandIn(REPO) as stand_in:
        yield stand_in


def test_published_weights_cold_start_the_app_then_serve_from_cache(hub, tmp_path):
    commit = publish(hub, tmp_path / "publisher")
    assert commit == hub.refs["main"]
    uploads = [r for r in hub.requests if not r.startswith("GET")]
    assert f"POST /api/models/{REPO}/preupload/main" in uploads and f"POST /api/models/{REPO}/commit/main" in uploads
    assert any(r.startswith("PUT /lfs-objects/") for r in uploads), "the weights must travel as an LFS object"
    assert set(hub.commits[commit]) == {f"{MODEL}/{name}" for name in ("model.safetensors", "config.json", "README.md")}
    assert hub.commits[commit][f"{MODEL}/model.safetensors"] == (ROOT / "weights" / MODEL / "model.safetensors").read_bytes()
    hub.refs[TAG] = commit  # what `HfApi().create_tag(REPO, tag=TAG, revision=commit)` does on the Hub

    empty, home = tmp_path / "no-weights", tmp_path / "hf"
    empty.mkdir()
    with app(hub, home, empty, offline=False) as client:
        details = detect(client)
    assert "hub download" in details and commit in details, details
    assert f"GET /{REPO}/resolve/{commit}/{MODEL}/model.safetensors" in hub.requests

    served = len(hub.requests)
    with app(hub, home, empty, offline=True) as client:
        details = detect(client)
    assert "hub cache" in details and commit in details, details
    assert len(hub.requests) == served, "offline, nothing may reach the Hub"


def test_a_wrong_sha256_from_the_hub_fails_the_cold_start(tmp_path):
    published = tmp_path / "repo"
    subprocess.run(
        [sys.executable, "-m", "ssad", "publish", "--repo", REPO, "--models", MODEL, "--dry-run", "--out", str(published)],
        check=True, capture_output=True, cwd=ROOT, timeout=120,
    )
    empty = tmp_path / "no-weights"
    empty.mkdir()
    with HubStandIn(REPO, published, tag=TAG) as hub:
        hub.corrupt.add(f"{MODEL}/model.safetensors")
        with app(hub, tmp_path / "hf", empty, offline=False) as client:
            with pytest.raises(Exception, match="sha256 does not match config.json"):
                detect(client)
