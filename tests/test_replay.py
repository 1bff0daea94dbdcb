"""Replay: today's training code against a commit's, weights compared bit for bit, and what adopting records."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ssad.cli import config_overrides, main
from ssad.errors import SsadError
from ssad.data import open_dataset
from ssad.methods import method_class
from ssad.rebuild import needed_step
from ssad.recipes import training_config
from ssad.replay import adopt, compare_weights, replay, settings_mismatch
from ssad.settings import CHECKOUT

TINY_SSM = ("size=32", "batch_size=4", "base_width=4", "refine_block=4", "refine_iterations=2")


def test_compare_weights_names_the_tensors_that_differ(tmp_path):
    first = {"a": torch.zeros(3), "b": torch.ones(2)}
    save_file(first, tmp_path / "first.safetensors")
    save_file({"a": torch.zeros(3), "b": torch.tensor([1.0, 1.25])}, tmp_path / "second.safetensors")
    save_file(first, tmp_path / "same.safetensors")
    differing = compare_weights(tmp_path / "first.safetensors", tmp_path / "second.safetensors")
    assert differing.differing == ("b",) and differing.max_difference == 0.25 and not differing.identical
    assert compare_weights(tmp_path / "first.safetensors", tmp_path / "same.safetensors").identical


def test_settings_mismatch_skips_what_the_replay_sets_and_fields_one_side_lacks():
    committed = {"epochs": 100, "lr": 1e-3, "width": 16, "new_field": 1}
    assert settings_mismatch(committed, {"epochs": 1, "lr": 1e-3, "width": 16}, {"epochs"}) == ""
    assert settings_mismatch(committed, {"epochs": 1, "lr": 1e-4, "width": 16}, {"epochs"}) == "lr 0.001 -> 0.0001"


@pytest.mark.skipif(
    subprocess.run(["git", "-C", str(CHECKOUT), "status", "--porcelain", "ssad"], capture_output=True, text=True).stdout.strip() != "",
    reason="ssad/ has uncommitted changes, so HEAD does not hold today's training code",
)
def test_a_model_replayed_against_head_is_bit_identical_and_adopting_asks_only_for_a_recalibration(synthetic_category, tmp_path):
    cls = method_class("ssm")
    folder = tmp_path / "model"
    train = [sys.executable, "-m", "ssad", "train", "--method", "ssm", "--data", str(synthetic_category), "--out", str(folder), "--epochs", "1"]
    subprocess.run(train + [arg for s in TINY_SSM for arg in ("--set", s)], check=True, capture_output=True, cwd=CHECKOUT)
    description = json.loads((folder / "config.json").read_text())
    del description["info"]["fingerprints"]  # as for a model trained before fingerprints were recorded
    (folder / "config.json").write_text(json.dumps(description))
    dataset = open_dataset(synthetic_category)
    config = training_config("ssm", dataset, config_overrides(cls, list(TINY_SSM)) | {"epochs": 1})
    assert needed_step(cls, folder, config, dataset)[0] == "train"

    record = replay("ssm", folder, synthetic_category, epochs=1, settings=TINY_SSM, commit="HEAD")
    assert record.comparison.identical and record.comparison.tensors > 10
    adopt("ssm", folder, record)
    assert needed_step(cls, folder, config, dataset) == ("recalibrate", "scoring code changed")
    assert json.loads((folder / "config.json").read_text())["info"]["fingerprints"]["replay"]["identical"] is True


def test_a_model_trained_from_modified_files_is_refused_before_anything_trains(tiny_weights, synthetic_category, tmp_path):
    folder = shutil.copytree(tiny_weights / "sgsf" / "mvtec" / "bottle", tmp_path / "model")
    description = json.loads((folder / "config.json").read_text())
    description["info"]["commit"] = "0123456789-dirty"
    (folder / "config.json").write_text(json.dumps(description))
    with pytest.raises(SsadError, match="trained from modified files"):
        replay("sgsf", folder, synthetic_category)


def test_the_cli_says_in_one_line_when_the_commit_is_unknown(tiny_weights, synthetic_category, capsys):
    folder = tiny_weights / "sgsf" / "mvtec" / "bottle"
    assert main(["replay", "--method", "sgsf", "--weights", str(folder), "--data", str(synthetic_category), "--commit", "0" * 40]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: git rev-parse") and "\n" not in error
