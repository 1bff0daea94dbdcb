"""Where a result comes from: code commit, date, device, library versions."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from typing import Any

import torch

from ssad.settings import CHECKOUT



def git_commit() -> str | None:
    """The commit of the checked-out code (with ``-dirty`` when files are modified), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no", "--", "ssad"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def device_name(device: torch.device | str) -> str:
    """A human-readable device: the GPU's name, or the CPU with its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device | str) -> dict[str, Any]:
    """Commit, UTC date, device and torch version, recorded with weights and measured results."""
    return {
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "device": device_name(device),
        "torch": torch.__version__,
    }


