"""The package installs outside the checkout: ``pip install .`` gives a working ``ssad`` command."""

from __future__ import annotations

import ast
import graphlib
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


def ssad_import_graph(package: Path = REPO_ROOT / "ssad") -> dict[str, set[str]]:
    """Module -> the ssad modules it imports (at the top or inside functions), from the source."""
    modules = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }

    def module_of(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ssad":
                imported |= {module_of(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {module_of(alias.name) for alias in node.names if alias.name.split(".")[0] == "ssad"}
        # A package's __init__ gathering its own modules is not a cycle.
        graph[name] = {other for other in imported if other != name and not other.startswith(f"{name}.")}
    return graph


def test_no_import_cycle_in_ssad():
    graph = ssad_import_graph()
    assert "ssad.recipes" in graph["ssad.cli"]  # the graph sees imports
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_the_import_graph_finds_a_cycle(tmp_path):
    package = tmp_path / "ssad"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from ssad.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from ssad import a\n")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(ssad_import_graph(package)).prepare()
