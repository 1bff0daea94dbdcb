"""Shared fixtures: a small synthetic MVTec category, the real data folder, and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def as_saved(method):
    """A copy of a trained method with its weights rounded to the storage dtype, as ``save`` writes them: what
    the loaded model must reproduce exactly (the model in memory keeps float32 weights)."""
    import copy

    import torch

    copied = copy.deepcopy(method)
    dtype = getattr(torch, copied.config.storage_dtype)
    with torch.no_grad():
        for tensor in copied.networks.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))
    return copied


def real_data(relative: str) -> Path:
    """A folder of ``../shared/data``; skips the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.is_dir():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def synthetic_category(tmp_path_factory) -> Path:
    from ssad.data import make_synthetic_mvtec

    return make_synthetic_mvtec(tmp_path_factory.mktemp("synthetic"), "synth", n_train=24, size=64, seed=0)


def tiny_config(cls):
    """A method's config shrunk for tests: small input, few epochs, narrow networks where a width is configurable."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    small = {"size": 32, "epochs": 2, "batch_size": 8, **({"base_width": 4} if "base_width" in fields else {})}
    if "refine_block" in fields:
        small["refine_block"] = 4
    return dataclasses.replace(cls.config_class(), **small)


@pytest.fixture(scope="session")
def tiny_weights(synthetic_category, tmp_path_factory) -> Path:
    """A weights folder with a tiny model of every registered method, trained on the synthetic category and
    saved as ``<method>/mvtec/bottle`` (so that the app's default model exists without real weights)."""
    import torch

    from ssad.data import open_dataset
    from ssad.methods import METHODS

    root = tmp_path_factory.mktemp("weights")
    dataset = open_dataset(synthetic_category)
    for cls in METHODS.values():
        torch.manual_seed(0)
        cls(tiny_config(cls)).fit(dataset).save(root / cls.id / "mvtec" / "bottle")
    return root


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_app(weights_dir: Path | None, log_path: Path):
    """Start ``python app.py`` on a free port (with ``weights_dir`` as SSAD_WEIGHTS_DIR when given); returns
    (process, url) once it answers, or fails the test with the server's log."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "SSAD_SESSION_STEP_SCALE": os.environ.get("SSAD_SESSION_STEP_SCALE", "0.05")}  # the Train tab's wiring, not its recipe
    if weights_dir is not None:
        env["SSAD_WEIGHTS_DIR"] = str(weights_dir)
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"the app did not start; log:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def app_url(tiny_weights, tmp_path_factory):
    """The app served by a real ``python app.py`` over the tiny weights."""
    process, url = serve_app(tiny_weights, tmp_path_factory.mktemp("app") / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)
