"""The package installs outside the checkout: ``pip install .`` gives a working ``ssad`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_install_gives_the_ssad_command_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", str(REPO_ROOT)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-3000:]
    done = subprocess.run([str(venv / "bin" / "ssad"), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calibrate" in done.stdout and "publish" in done.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ssad, ssad.settings as s; print(ssad.__file__); print(s.WEIGHTS_DIR)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    module, weights = where.stdout.split()
    assert str(venv) in module and not module.startswith(str(REPO_ROOT))  # the installed copy, not the checkout
    assert Path(weights).parent == Path(module).parent.parent
