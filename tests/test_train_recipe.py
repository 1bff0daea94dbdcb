"""The Train tab's recipe on real data: each method trained through the service on 16 bottle training
images, within the tab's time limit, scores the whole bottle test set with image AUROC >= 0.85."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import real_data
from ssad import service
from ssad.data import open_dataset
from ssad.methods import METHODS
from ssad.recipes import SESSION_RECIPE
from ssad.metrics import image_auroc

pytestmark = pytest.mark.slow


def train_and_score(method_id: str, bottle: Path, workdir: Path) -> tuple[float, float, service.SelfCheck]:
    """(training seconds, image AUROC on the bottle test set, self-check) of one session model."""
    uploads = sorted((bottle / "train" / "good").glob("*.png"))[:16]
    started = time.perf_counter()
    _, method, check = service.train_session_model(METHODS[method_id].display_name, "bottle16", uploads, workdir)
    seconds = time.perf_counter() - started
    test = open_dataset(bottle).test
    scores = np.array([method.predict(sample.path, with_frames=False).score for sample in test])
    return seconds, float(image_auroc(np.array([sample.label for sample in test]), scores)), check


SEEDS = {"st-ssad": (0, 1, 2), "sgsf": (0, 1, 2)}
"""ST-SSAD's detector and SGSF's segmenter, each trained on 8 normals, change with the draw (image AUROC over
seeds 0-2: ST-SSAD 0.832, 0.894, 0.863, fp32 on an AMX machine; SGSF 0.812, 0.863, 0.909 with torch's 2 threads,
bf16 on an AVX-512 BF16 machine, and 0.887 mean without its stroke forgeries): each recipe is judged on the
mean of three draws, which they afford (25-60 s each)."""


@pytest.mark.parametrize("method_id", list(METHODS))
def test_session_model_on_16_bottle_images_finds_bottle_defects(method_id, tmp_path, monkeypatch):
    aurocs = []
    for seed in SEEDS.get(method_id, (0,)):
        monkeypatch.setitem(SESSION_RECIPE, method_id, {**SESSION_RECIPE[method_id], "seed": seed})
        seconds, auroc, check = train_and_score(method_id, real_data("mvtec/bottle"), tmp_path / str(seed))
        print(f"{method_id} seed {seed}: trained in {seconds:.1f} s, image AUROC {auroc:.3f}; {check.describe()}")
        assert seconds < service.TrainingLimits().max_seconds
        aurocs.append(auroc)
    # Measured with 1 / 2 torch threads (the sums run in another order, so the runs differ): SSM 0.942 / -
    # in 127 s on one of two busy cores of an AVX2 machine, 0.941 on an AMX machine in 36 s; SGSF seed 0
    # 0.866 / 0.812 in 66 / 34 s on an AVX-512 BF16 machine.
    assert np.mean(aurocs) >= 0.85


if __name__ == "__main__":  # python tests/test_train_recipe.py [method ...]: the numbers only
    for name in sys.argv[1:] or list(METHODS):
        seconds, auroc, check = train_and_score(name, Path(os.environ.get("BOTTLE", "../shared/data/mvtec/bottle")), Path("/tmp/recipe"))
        print(f"{name}: trained in {seconds:.1f} s, image AUROC {auroc:.3f}; {check.describe()}", flush=True)
