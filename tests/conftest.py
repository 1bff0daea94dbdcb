"""Shared fixtures: a small synthetic MVTec category, the real data folder, and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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
