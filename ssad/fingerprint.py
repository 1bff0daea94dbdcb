"""The fingerprint of the code that a trained model's numbers depend on.

Weights record the commit that trained them; a rebuild reuses them only while that code is unchanged.
"That code" is the method's own package, whole, plus every definition it reaches in the rest of
``ssad`` by name (``from ssad.nn.losses import ssim`` takes ``ssim`` and whatever ``ssim`` uses, not
the rest of the module), followed transitively. Docstrings, comments and formatting do not count, so a
new loss added beside ``ssim`` for another method, or a reworded docstring, keeps weights current, while
any change to code they run does not.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess

from ssad.provenance import REPO_ROOT


class CodeSource:
    """Python files of the repository: in the working tree, or as they were at ``commit``."""

    def __init__(self, commit: str | None = None):
        self.commit = commit

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)

    def read(self, path: str) -> str | None:
        """The text of ``a/b.py``, or None when there is no such file."""
        if self.commit is None:
            return (REPO_ROOT / path).read_text() if (REPO_ROOT / path).is_file() else None
        done = self._git("show", f"{self.commit}:{path}")
        return done.stdout if done.returncode == 0 else None

    def python_files(self, folder: str) -> list[str]:
        """The ``.py`` files directly in ``folder``."""
        if self.commit is None:
            return sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / folder).glob("*.py"))
        return sorted(name for name in self._git("ls-tree", "--name-only", self.commit, f"{folder}/").stdout.split() if name.endswith(".py"))


def _without_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            child.body = body[1:] or [ast.Pass()]
    return node


def code_only(source: str) -> str:
    """Python source without comments, docstrings and formatting, so only code changes count."""
    return ast.unparse(_without_docstrings(ast.parse(source)))


def _module_source(module: str, code: CodeSource) -> str | None:
    base = module.replace(".", "/")
    source = code.read(f"{base}.py")
    return source if source is not None else code.read(f"{base}/__init__.py")


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    """Each top-level name of a module and the statement that defines or imports it."""
    names: dict[str, ast.stmt] = {}
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[statement.name] = statement
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        names[node.id] = statement
        elif isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
            for alias in statement.names:
                names[alias.asname or alias.name] = statement
    return names


def code_fingerprint(package: str, commit: str | None = None, code: CodeSource | None = None) -> str | None:
    """sha256 of ``package`` (e.g. ``ssad.methods.ssm``) and the ``ssad`` definitions it reaches, now or at ``commit``.

    None when it cannot be told: no commit, one recorded as ``-dirty`` (the code then was not what the
    commit holds), or a commit or file git does not have.
    """
    if commit is not None and (not commit or commit.endswith("-dirty")):
        return None
    code = code or CodeSource(commit)
    try:
        folder = package.replace(".", "/")
        modules = [name[:-3].replace("/", ".").removesuffix(".__init__") for name in code.python_files(folder)]
        if not modules:
            return None
        trees = {}
        pieces: dict[tuple[str, str], str] = {}
        pending: list[tuple[str, str]] = []
        for module in modules:
            source = _module_source(module, code)
            if source is None:
                return None
            tree = ast.parse(source)
            pieces[(module, "*")] = code_only(source)
            for statement in tree.body:
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("ssad.") and statement.level == 0:
                    pending += [(statement.module, alias.name) for alias in statement.names if not statement.module.startswith(package)]
        while pending:
            module, name = pending.pop()
            if (module, name) in pieces:
                continue
            if module not in trees:
                source = _module_source(module, code)
                if source is None:
                    return None
                trees[module] = ast.parse(source)
            definitions = _top_level(trees[module])
            statement = definitions.get(name)
            if statement is None:
                return None
            if isinstance(statement, ast.ImportFrom):  # a re-export: follow it
                pieces[(module, name)] = f"from {statement.module} import {name}"
                if statement.module.startswith("ssad."):
                    pending.append((statement.module, next(a.name for a in statement.names if (a.asname or a.name) == name)))
                continue
            pieces[(module, name)] = ast.unparse(_without_docstrings(statement))
            used = {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}
            pending += [(module, other) for other in used if other in definitions and other != name]
    except (OSError, subprocess.SubprocessError, SyntaxError):
        return None
    digest = hashlib.sha256()
    for key in sorted(pieces):
        digest.update(f"{key[0]}:{key[1]}\0{pieces[key]}\0".encode())
    return digest.hexdigest()
