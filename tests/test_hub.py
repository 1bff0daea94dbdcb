"""Weight resolution order: embedded folder, Hugging Face cache, download from a (local stand-in) Hub."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import real_data

from ssad.data import load_image
from ssad.errors import WeightsError
from ssad.hub import WEIGHTS_DIR, embedded_models, load_model, model_key, resolve_weights
from ssad.methods.base import WEIGHTS_FILE
from ssad.methods.ssm import SSM, SSMConfig
from ssad.result import Calibration

REPO = "ssad-test/weights"
REVISION = "v9"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """An untrained, tiny SSM saved as ``<root>/ssm/mvtec/toy``."""
    method = SSM(SSMConfig(size=32, base_width=4))
    method.calibration = Calibration(0.0, 1.0, 3.0, 0.0, 1.0, 4, "test")
    method.state = {"refine_threshold": 0.1, "map_max_mean": 0, "map_max_std": 1, "mse_mean": 0, "mse_std": 1}
    root = tmp_path_factory.mktemp("weights")
    method.save(root / "ssm" / "mvtec" / "toy")
    return root


def fake_hf_cache(cache: Path, weights_root: Path) -> None:
    """Lay the model out as huggingface_hub does: blobs behind snapshots/<commit>/, refs/<revision>."""
    repo_dir = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT / "ssm" / "mvtec" / "toy"
    shutil.copytree(weights_root / "ssm" / "mvtec" / "toy", snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / REVISION).write_text(COMMIT)


def test_model_key_rejects_paths():
    assert model_key("ssm", "mvtec/bottle") == "ssm/mvtec/bottle"
    for bad in ("bottle", "../etc/passwd", "mvtec/../x", "a/b/c", "mvtec/bot tle"):
        with pytest.raises(WeightsError):
            model_key("ssm", bad)


def test_embedded_weights_come_first(saved_model, tmp_path):
    fake_hf_cache(tmp_path, saved_model)
    resolved = resolve_weights("ssm", "mvtec/toy", weights_dir=saved_model, repo=REPO, revision=REVISION, cache_dir=tmp_path)
    assert resolved.source == "embedded"
    assert resolved.folder == saved_model / "ssm" / "mvtec" / "toy"


def test_hub_cache_is_used_when_not_embedded(saved_model, tmp_path):
    fake_hf_cache(tmp_path / "cache", saved_model)
    resolved = resolve_weights(
        "ssm", "mvtec/toy", weights_dir=tmp_path / "empty", repo=REPO, revision=REVISION, cache_dir=tmp_path / "cache"
    )
    assert resolved.source == "hub cache"
    assert COMMIT in str(resolved.folder)
    assert SSM.load(resolved.folder).calibration.image_threshold == 3.0


def test_missing_everywhere_offline_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no weights for ssm/mvtec/none"):
        resolve_weights("ssm", "mvtec/none", weights_dir=tmp_path, repo=REPO, revision=REVISION, cache_dir=tmp_path)


class _HubStandIn(http.server.BaseHTTPRequestHandler):
    """Answers ``/<repo>/resolve/<revision>/<path>`` like the Hub's file endpoint (HEAD and GET)."""

    root: Path
    requests: list[str] = []

    def _file(self) -> Path | None:
        prefix = f"/{REPO}/resolve/{REVISION}/"
        if not self.path.startswith(prefix):
            return None
        path = self.root / self.path[len(prefix):]
        return path if path.is_file() else None

    def _answer(self, with_body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{abs(hash(body))}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(with_body=True)

    def log_message(self, *args) -> None:
        pass


RESOLVE = """
import json, sys
from pathlib import Path
from ssad.hub import resolve_weights
r = resolve_weights("ssm", "mvtec/toy", weights_dir=Path(sys.argv[1]), repo="{repo}", revision="{revision}",
                    cache_dir=Path(sys.argv[2]))
print(json.dumps({{"source": r.source, "folder": str(r.folder)}}))
"""


def _resolve_in_subprocess(empty: Path, cache: Path, offline: bool, endpoint: str) -> dict:
    # huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, at import: a fresh interpreter is needed.
    env = {**os.environ, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_ENDPOINT": endpoint}
    code = RESOLVE.format(repo=REPO, revision=REVISION)
    done = subprocess.run(
        [sys.executable, "-c", code, str(empty), str(cache)],
        capture_output=True, text=True, env=env, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_download_from_hub_stand_in_then_cache(saved_model, tmp_path):
    handler = type("Handler", (_HubStandIn,), {"root": saved_model, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        first = _resolve_in_subprocess(tmp_path / "empty", tmp_path / "cache", offline=False, endpoint=endpoint)
        assert first["source"] == "hub download"
        assert any(f"/resolve/{REVISION}/ssm/mvtec/toy/model.safetensors" in r for r in handler.requests)
        second = _resolve_in_subprocess(tmp_path / "empty", tmp_path / "cache", offline=True, endpoint=endpoint)
        assert second["source"] == "hub cache"
        assert SSM.load(Path(second["folder"])).state["refine_threshold"] == 0.1
    finally:
        server.shutdown()


DEFAULT_WEIGHTS_CAP = 5_000_000  # bytes a committed default model may take
BROKEN_BOTTLE = "test/broken_large/000.png"  # every method's bottle default finds it (image AUROC >= 0.95)


@pytest.mark.parametrize("method_id, model", embedded_models())
def test_every_default_model_is_small_and_loads(method_id, model):
    """The committed defaults stay under the cap (they live in git history) and load as they are."""
    assert (WEIGHTS_DIR / method_id / model / WEIGHTS_FILE).stat().st_size <= DEFAULT_WEIGHTS_CAP
    method, _ = load_model(method_id, model)
    assert method.calibration is not None and method.config.size > 0


@pytest.mark.parametrize("method_id", [method for method, model in embedded_models() if model == "mvtec/bottle"])
def test_default_mask_shows_an_obvious_defect(method_id):
    """At the default sensitivity the calibrated mask of a plainly broken test image is not empty.

    A pixel threshold beyond what the map can reach (e.g. above 1 for a probability map) would leave
    the app's mask blank for every upload.
    """
    image = load_image(real_data("mvtec/bottle") / BROKEN_BOTTLE)
    result = load_model(method_id, "mvtec/bottle")[0].predict(image, with_frames=False)
    assert result.mask().any(), f"pixel threshold {result.calibration.pixel_threshold:.3f}, map max {result.anomaly_map.max():.3f}"
