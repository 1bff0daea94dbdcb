"""Weight resolution order: embedded folder, Hugging Face cache, download from a (local stand-in) Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import real_data
from hub_standin import HubStandIn

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


RESOLVE = """
import json, sys
from pathlib import Path
from ssad.hub import resolve_weights
for line in sys.stdin:  # one model per line, resolved in this one process
    r = resolve_weights("ssm", line.strip(), weights_dir=Path(sys.argv[1]), repo=sys.argv[3], revision=sys.argv[4],
                        cache_dir=Path(sys.argv[2]))
    print(json.dumps({"source": r.source, "folder": str(r.folder)}), flush=True)
"""


def _resolver(empty: Path, cache: Path, offline: bool, endpoint: str) -> subprocess.Popen:
    """A fresh interpreter resolving the models written to its stdin (huggingface_hub reads HF_* at import)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_ENDPOINT": endpoint}
    return subprocess.Popen(
        [sys.executable, "-c", RESOLVE, str(empty), str(cache), REPO, REVISION],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=Path(__file__).resolve().parents[1],
    )


def _resolve(process: subprocess.Popen, model: str) -> dict:
    process.stdin.write(model + "\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(process.stderr.read()[-2000:])
    return json.loads(line)


def _resolve_once(empty: Path, cache: Path, offline: bool, endpoint: str, model: str = "mvtec/toy") -> dict:
    process = _resolver(empty, cache, offline, endpoint)
    try:
        return _resolve(process, model)
    finally:
        process.kill()
        process.wait(timeout=30)


def test_download_from_hub_stand_in_then_cache(saved_model, tmp_path):
    with HubStandIn(REPO, saved_model, tag=REVISION) as hub:
        first = _resolve_once(tmp_path / "empty", tmp_path / "cache", offline=False, endpoint=hub.endpoint)
        commit = hub.refs[REVISION]
        assert first["source"] == "hub download"
        assert f"/snapshots/{commit}/" in first["folder"]
        assert hub.requests.count(f"GET /api/models/{REPO}/revision/{REVISION}") == 1
        assert f"GET /{REPO}/resolve/{commit}/ssm/mvtec/toy/model.safetensors" in hub.requests
        assert not any(f"/resolve/{REVISION}/" in r for r in hub.requests), "files must be fetched at the commit sha"
        second = _resolve_once(tmp_path / "empty", tmp_path / "cache", offline=True, endpoint=hub.endpoint)
    assert second["source"] == "hub cache"
    assert SSM.load(Path(second["folder"])).state["refine_threshold"] == 0.1


def test_a_moving_tag_does_not_mix_commits_in_one_process(saved_model, tmp_path):
    """The tag is resolved once: a model fetched after the tag moved still comes from the first commit."""
    shutil.copytree(saved_model / "ssm" / "mvtec" / "toy", tmp_path / "repo" / "ssm" / "mvtec" / "toy2")
    shutil.copytree(saved_model / "ssm" / "mvtec" / "toy", tmp_path / "repo" / "ssm" / "mvtec" / "toy")
    with HubStandIn(REPO, tmp_path / "repo", tag=REVISION) as hub:
        first_commit = hub.refs[REVISION]
        process = _resolver(tmp_path / "empty", tmp_path / "cache", offline=False, endpoint=hub.endpoint)
        try:
            first = _resolve(process, "mvtec/toy")
            hub.refs[REVISION] = hub.commit("main", {"NOTES.md": b"moved"})
            second = _resolve(process, "mvtec/toy2")
        finally:
            process.kill()
            process.wait(timeout=30)
    assert first["source"] == second["source"] == "hub download"
    assert f"/snapshots/{first_commit}/" in first["folder"] and f"/snapshots/{first_commit}/" in second["folder"]
    assert hub.requests.count(f"GET /api/models/{REPO}/revision/{REVISION}") == 1


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
