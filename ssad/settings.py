"""Where ssad reads and writes its files. Each path is a setting (an environment variable) whose default
is the folder layout of a checkout of this repository, so the library also works installed elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
"""The folder that holds the ``ssad`` package: a checkout of the repository, or site-packages when installed."""


def _setting(variable: str, default: Path) -> Path:
    return Path(os.environ.get(variable) or default)


WEIGHTS_DIR = _setting("SSAD_WEIGHTS_DIR", CHECKOUT / "weights")
"""Embedded models, ``<method>/<dataset>/<category>/``; models missing here come from the Hub."""
RESULTS_FILE = _setting("SSAD_RESULTS_FILE", CHECKOUT / "leaderboard" / "results.csv")
"""The leaderboard table, measured and reported rows."""
RUNS_DIR = _setting("SSAD_RUNS_DIR", CHECKOUT / "runs")
"""Working state of long jobs (rebuild reports), never committed."""
DATA_DIR = _setting("SSAD_DATA_DIR", CHECKOUT.parent / "shared" / "data")
"""The real datasets that rebuild uses by default."""
