"""Where a result comes from: code commit, date, device, library versions."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """The commit of the checked-out code (with ``-dirty`` when files are modified), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "ssad"],
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



def _code_only(source: str) -> str:
    """Python source without comments, docstrings and formatting, so only code changes count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout


def code_fingerprint(paths: list[str], commit: str | None = None) -> str | None:
    """sha256 of the code of the Python files under ``paths`` (relative to the repository), now or at ``commit``.

    Docstrings, comments and formatting do not count. None when it cannot be told (no git, an unknown
    commit, or one recorded as ``-dirty``: the code then was not what the commit holds).
    """
    if commit is not None and commit.endswith("-dirty"):
        return None
    digest = hashlib.sha256()
    try:
        if commit is None:
            files = sorted(str(p.relative_to(REPO_ROOT)) for path in paths for p in (REPO_ROOT / path).glob("**/*.py") if p.is_file())
            files += sorted(path for path in paths if path.endswith(".py") and (REPO_ROOT / path).is_file())
            read = lambda name: (REPO_ROOT / name).read_text()  # noqa: E731
        else:
            files = sorted(_git("ls-tree", "-r", "--name-only", commit, "--", *paths).split())
            files = [name for name in files if name.endswith(".py")]
            read = lambda name: _git("show", f"{commit}:{name}")  # noqa: E731
        for name in sorted(set(files)):
            digest.update(name.encode() + b"\0" + _code_only(read(name)).encode() + b"\0")
    except (OSError, subprocess.SubprocessError, SyntaxError):
        return None
    return digest.hexdigest()
