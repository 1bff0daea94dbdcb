"""What ``ssad publish`` writes (weights, config, model cards the Hub reads) and the repository as a Space.

Covers the README's Space header, ``.gitattributes`` marking weights and examples for LFS when pushed,
and the committed weights staying real safetensors blobs in git here (no git-lfs installed or needed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, SpaceCard, SpaceHardware
from safetensors.torch import load as load_safetensors

from ssad.catalog import DATASETS
from ssad.cli import main
from ssad.hub import HUB_REPO, embedded_models
from ssad.leaderboard import load_leaderboard
from ssad.methods import method_class

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "weights").glob("*/*/*/model.safetensors"))


def _git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish")
    assert main(["publish", "--repo", "ssad-test/weights", "--dry-run", "--out", str(out)]) == 0
    return out


def test_dry_run_writes_every_model_with_its_files(dry_run):
    models = embedded_models()
    assert models, "no embedded models to publish"
    for method, model in models:
        folder = dry_run / method / model
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
        for name in ("model.safetensors", "config.json"):
            assert (folder / name).read_bytes() == (ROOT / "weights" / method / model / name).read_bytes()


def test_cards_carry_hub_metadata_and_the_measured_image_auroc(dry_run):
    board = load_leaderboard()
    for method, model in embedded_models():
        card = ModelCard.load(dry_run / method / model / "README.md")
        data = card.data
        assert data.library_name == "ssad" and method in data.tags and "anomaly-detection" in data.tags
        assert data.license == DATASETS[model.split("/")[0]].license  # mvtec, kolektorsdd: cc-by-nc-sa-4.0; oct: cc-by-4.0
        dataset, category = model.split("/")
        measured = board.rows[
            (board.rows["method"] == method_class(method).display_name) & (board.rows["dataset"] == dataset)
            & (board.rows["category"] == category) & (board.rows["source"] == "measured") & (board.rows["metric"] == "image_auroc")
        ]
        assert len(measured) == 1, f"{method}/{model}: expected one measured image AUROC row"
        image_auroc = [r for r in data.eval_results if r.metric_type == "image_auroc"]
        assert [r.metric_value for r in image_auroc] == [pytest.approx(float(measured["value"].iloc[0]), abs=1e-12)]
        assert all(r.dataset_config == category and r.dataset_split == "test" for r in data.eval_results)
        assert "method_class(" in card.text and "## Training" in card.text


@pytest.mark.parametrize("argv, message", [
    (["--repo", "not a repo", "--dry-run", "--out", "x"], "not a Hub repository id"),
    (["--repo", "o/n", "--dry-run"], "--dry-run needs --out"),
    (["--repo", "o/n", "--out", "x"], "--dry-run needs --out"),
    (["--repo", "o/n", "--models", "ssm/mvtec/nothing", "--dry-run", "--out", "x"], "ssm/mvtec/nothing: no model.safetensors"),
    (["--repo", "o/n", "--models", "nomethod/mvtec/bottle", "--dry-run", "--out", "x"], "nomethod"),
    (["--repo", "o/n", "--models", "ssm/../x", "--dry-run", "--out", "x"], "not of the form dataset/category"),
])
def test_bad_publish_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["publish", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_readme_header_is_space_metadata_for_the_ci_python():
    data = SpaceCard.load(ROOT / "README.md").data.to_dict()
    assert data["sdk"] == "gradio" and data["app_file"] == "app.py"
    assert str(data["python_version"]) == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert 0 < len(data["short_description"]) <= 60
    assert data["suggested_hardware"] in {hardware.value for hardware in SpaceHardware}
    assert HUB_REPO in data["models"] and data["datasets"] and data["tags"]
    assert data["license"] == "cc-by-nc-sa-4.0"


def test_weights_and_examples_go_to_lfs_when_pushed():
    images = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "examples").rglob("*") if p.suffix in (".png", ".jpeg"))
    out = _git("check-attr", "filter", "--", *WEIGHTS, *images).stdout.decode().splitlines()
    assert len(out) == len(WEIGHTS) + len(images) > 0
    assert all(line.endswith(": filter: lfs") for line in out), out


@pytest.mark.parametrize("path", WEIGHTS)
def test_committed_weights_are_safetensors_blobs_not_lfs_pointers(path):
    blob = _git("show", f"HEAD:{path}").stdout
    assert not blob.startswith(b"version https://git-lfs")
    assert load_safetensors(blob), f"{path}: no tensors"


def test_a_fresh_clone_without_git_lfs_keeps_the_blobs(tmp_path):
    """git skips the undefined lfs filter: checkout and add leave the bytes alone, and status stays clean."""
    clone = tmp_path / "clone"
    _git("clone", "--quiet", "--no-hardlinks", f"file://{ROOT}", str(clone))
    assert _git("status", "--porcelain", cwd=clone).stdout == b""
    path = WEIGHTS[0]
    assert (clone / path).read_bytes() == _git("show", f"HEAD:{path}", cwd=clone).stdout
    (clone / path).write_bytes((clone / path).read_bytes() + b"\0")
    _git("add", path, cwd=clone)
    assert _git("show", f":{path}", cwd=clone).stdout == (clone / path).read_bytes()
