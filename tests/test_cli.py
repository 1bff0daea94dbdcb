"""The command line: a full train -> evaluate -> predict -> bench round on synthetic data, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssad", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_clear_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {done.stderr}"
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained_folder(synthetic_category, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "w"
    done = run_cli("train", "--method", "ssm", "--data", str(synthetic_category), "--out", str(out), "--size", "32", "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["model"] == "mvtec/synth"
    return out


def test_train_writes_weights_and_config(trained_folder):
    config = json.loads((trained_folder / "config.json").read_text())
    assert config["method"] == "ssm"
    assert config["config"]["size"] == 32 and config["config"]["epochs"] == 2
    assert config["info"]["model"] == "mvtec/synth"
    assert len(config["weights_sha256"]) == 64
    assert config["calibration"]["image_threshold"] > config["calibration"]["image_mean"]


def test_evaluate_prints_the_contract_json(trained_folder, synthetic_category, tmp_path):
    out = tmp_path / "eval.json"
    done = run_cli("evaluate", "--method", "ssm", "--data", str(synthetic_category), "--weights", str(trained_folder), "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    for key in ("method", "dataset", "category", "image_auroc", "pixel_auroc", "pixel_ap", "aupro", "image_f1_max", "n_test", "seconds_per_image"):
        assert key in report
    assert (report["dataset"], report["category"], report["n_test"]) == ("mvtec", "synth", 12)
    for key in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "image_f1_max"):
        assert 0.0 <= report[key] <= 1.0


def test_predict_and_overlay(trained_folder, synthetic_category, tmp_path):
    image = next((synthetic_category / "test").glob("*/*.png"))
    overlay = tmp_path / "overlay.png"
    done = run_cli("predict", "--method", "ssm", "--weights", str(trained_folder), str(image), "--out", str(overlay))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["label"] in ("normal", "anomalous")
    assert (answer["score"] > answer["threshold"]) == (answer["label"] == "anomalous")
    assert overlay.stat().st_size > 0


def test_bench_reports_medians(trained_folder):
    done = run_cli("bench", "--method", "ssm", "--weights", str(trained_folder), "--n", "3")
    assert done.returncode == 0, done.stderr
    bench = json.loads(done.stdout)
    assert bench["ms_per_image_median"] > 0 and bench["ms_per_image_p90"] >= bench["ms_per_image_median"]
    assert bench["size"] == 32 and bench["device"] == "cpu"


def test_errors_are_one_line_with_exit_2(trained_folder, synthetic_category, tmp_path):
    assert_clear_error(run_cli("train", "--method", "ssm", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")), "nope")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("x")
    assert_clear_error(run_cli("evaluate", "--method", "ssm", "--data", str(tmp_path / "odd")), "odd")
    assert_clear_error(run_cli("evaluate", "--method", "xyz", "--data", str(synthetic_category)), "unknown method 'xyz'")
    assert_clear_error(run_cli("evaluate", "--method", "ssm", "--data", str(synthetic_category)), "no weights for ssm/mvtec/synth")
    assert_clear_error(run_cli("predict", "--method", "ssm", "--weights", str(tmp_path / "none"), "x.png"), "no such folder")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    assert_clear_error(run_cli("predict", "--method", "ssm", "--weights", str(trained_folder), str(bad)), "bad.png")
    assert_clear_error(run_cli("frobnicate"), "frobnicate")
