"""The command line: a full train -> evaluate -> predict -> calibrate -> bench round on synthetic data, and its errors."""

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


def test_bench_reports_medians_beside_fp32(trained_folder):
    done = run_cli("bench", "--method", "ssm", "--weights", str(trained_folder), "--n", "3", "--precision", "bf16")
    assert done.returncode == 0, done.stderr
    bench = json.loads(done.stdout)
    assert bench["ms_per_image_median"] > 0 and bench["ms_per_image_p90"] >= bench["ms_per_image_median"]
    assert bench["size"] == 32 and bench["device"] == "cpu" and bench["precision"] == "bf16"
    assert bench["fp32_ms_per_image_median"] > 0
    assert bench["speedup_over_fp32"] == round(bench["fp32_ms_per_image_median"] / bench["ms_per_image_median"], 2)


def test_calibrate_rewrites_the_calibration_only(trained_folder, synthetic_category, tmp_path):
    import shutil

    folder = tmp_path / "w"
    shutil.copytree(trained_folder, folder)
    weights_before = (folder / "model.safetensors").read_bytes()
    config = json.loads((folder / "config.json").read_text())
    config["calibration"]["pixel_threshold"] = 1e6  # what an unreachable threshold looked like
    (folder / "config.json").write_text(json.dumps(config))

    done = run_cli("calibrate", "--method", "ssm", "--weights", str(folder), "--data", str(synthetic_category))
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    after = json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").read_bytes() == weights_before
    assert answer["weights_sha256"] == after["weights_sha256"] == config["weights_sha256"]
    assert answer["before"]["pixel_threshold"] == 1e6
    assert after["calibration"] == answer["after"]
    assert after["calibration"]["pixel_threshold"] <= after["calibration"]["pixel_max"]
    assert after["info"]["fingerprints"]["scoring"] and after["info"]["calibrated"]["seconds"] >= 0


def test_calibrate_refuses_another_training_set(trained_folder, synthetic_category, tmp_path):
    import shutil

    data = tmp_path / "mvtec" / "synth"
    shutil.copytree(synthetic_category, data)
    shutil.copy(next((data / "train" / "good").glob("*.png")), data / "train" / "good" / "extra.png")
    folder = tmp_path / "w"
    shutil.copytree(trained_folder, folder)
    done = run_cli("calibrate", "--method", "ssm", "--weights", str(folder), "--data", str(data))
    assert_clear_error(done, "the training images changed", "retrain")
    assert_clear_error(run_cli("calibrate", "--method", "ssm", "--model", "mvtec/nothing"), "no weights for ssm/mvtec/nothing")


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
