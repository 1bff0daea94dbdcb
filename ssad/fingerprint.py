"""Fingerprints of the code a trained model depends on: the code that shaped its weights, and the code that scores with them.

A model is trained once and scored many times, so a code change asks one of two things of it:
* **training** fingerprint: what :meth:`Method.fit` runs to produce the weights: the members reachable
  from the method's ``build_networks`` and ``train_networks`` and the base class's ``fit`` (through
  ``self.<member>``, overrides first), stopping at the scoring entry points (``calibrate``,
  ``fit_scoring``, ``infer``, ...), plus every ``ssad`` definition they reach by name. A change here means
  retrain.
* **scoring** fingerprint: the method's package, whole, plus every ``ssad`` definition it reaches by
  name (``from ssad.nn.losses import ssim`` takes ``ssim`` and whatever ``ssim`` uses, not the rest of
  the module), followed transitively. A change here that leaves the training fingerprint alone means
  recalibrate and re-evaluate, with the weights as they are.

Docstrings, comments and formatting do not count, and neither does bookkeeping (provenance, error
types, this module). Both fingerprints are stored with the weights when they are trained, so staleness
is told without the repository's history, also outside a checkout.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from pathlib import Path
from typing import Iterator

from ssad.settings import CHECKOUT

TRAINING_ROOTS = ("build_networks", "train_networks", "fit")
SCORING_ENTRY_POINTS = frozenset({"calibrate", "recalibrate", "fit_scoring", "infer", "predict"})
BOOKKEEPING_MODULES = frozenset({"ssad.fingerprint", "ssad.provenance", "ssad.errors", "ssad.settings"})


class CodeSource:
    """The Python files below ``root`` (default: the installed ``ssad`` package's folder)."""

    def __init__(self, root: Path = CHECKOUT):
        self.root = Path(root)

    def read(self, path: str) -> str | None:
        """The text of ``a/b.py``, or None when there is no such file."""
        file = self.root / path
        return file.read_text() if file.is_file() else None

    def python_files(self, folder: str) -> list[str]:
        """The ``.py`` files directly in ``folder``."""
        return sorted(str(p.relative_to(self.root)) for p in (self.root / folder).glob("*.py"))


def _without_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            child.body = body[1:] or [ast.Pass()]
    return node


def _without_annotations(node: ast.AST) -> ast.AST:
    """A copy of ``node`` without type annotations, which name classes but run no code."""
    node = copy.deepcopy(node)
    for child in ast.walk(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            child.returns = None
        elif isinstance(child, ast.arg):
            child.annotation = None
    return node


def code_only(source: str) -> str:
    """Python source without comments, docstrings and formatting, so only code changes count."""
    return ast.unparse(_without_docstrings(ast.parse(source)))


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


class _Unresolved(Exception):
    """A module or definition that the code names cannot be found."""


class _Reach:
    """Collects the source of definitions reached from some roots, following names across ``ssad`` modules."""

    def __init__(self, code: CodeSource):
        self.code = code
        self.trees: dict[str, ast.Module] = {}
        self.pieces: dict[tuple[str, str], str] = {}

    def tree(self, module: str) -> ast.Module:
        if module not in self.trees:
            base = module.replace(".", "/")
            source = self.code.read(f"{base}.py")
            source = source if source is not None else self.code.read(f"{base}/__init__.py")
            if source is None:
                raise _Unresolved(module)
            self.trees[module] = ast.parse(source)
        return self.trees[module]

    def follow_names(self, module: str, node: ast.AST, skip: str | None = None) -> Iterator[tuple[str, str]]:
        """The module's top-level names that ``node`` uses, and ``ssad`` names it imports inside functions."""
        definitions = _top_level(self.tree(module))
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and child.id in definitions and child.id != skip:
                yield module, child.id
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("ssad.") and child.level == 0:
                yield from ((child.module, alias.name) for alias in child.names)

    def add_definition(self, module: str, name: str) -> Iterator[tuple[str, str]]:
        """Record a top-level definition; yield what it reaches."""
        if module in BOOKKEEPING_MODULES or (module, name) in self.pieces:
            return
        statement = _top_level(self.tree(module)).get(name)
        if statement is None:
            raise _Unresolved(f"{module}.{name}")
        if isinstance(statement, ast.ImportFrom):  # a re-export: follow it
            self.pieces[(module, name)] = f"from {statement.module} import {name}"
            if (statement.module or "").startswith("ssad."):
                yield statement.module, next(a.name for a in statement.names if (a.asname or a.name) == name)
            return
        self.pieces[(module, name)] = ast.unparse(_without_docstrings(statement))
        yield from self.follow_names(module, statement, skip=name)

    def member(self, module: str, cls: str, name: str) -> tuple[str, str, ast.FunctionDef] | None:
        """Where ``cls.name`` is defined (the class itself first, then its bases), or None for plain attributes."""
        statement = _top_level(self.tree(module)).get(cls)
        if isinstance(statement, ast.ImportFrom):
            original = next(a.name for a in statement.names if (a.asname or a.name) == cls)
            return self.member(statement.module, original, name) if statement.module.startswith("ssad.") else None
        if not isinstance(statement, ast.ClassDef):
            return None
        for item in statement.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                return module, cls, item
        for base in statement.bases:
            if isinstance(base, ast.Name):
                found = self.member(module, base.id, name)
                if found is not None:
                    return found
        return None

    def add_member(self, module: str, cls: str, name: str) -> Iterator[tuple[str, str]]:
        """Record a member of ``cls`` (as an instance of ``cls`` would run it); yield the top-level names it reaches."""
        found = self.member(module, cls, name)
        if found is None:
            return
        where, owner, function = found
        if (where, f"{owner}.{name}") in self.pieces:
            return
        function = _without_annotations(_without_docstrings(copy.deepcopy(function)))
        self.pieces[(where, f"{owner}.{name}")] = ast.unparse(function)
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                if node.attr not in SCORING_ENTRY_POINTS:
                    yield from self.add_member(module, cls, node.attr)
        yield from self.follow_names(where, function)

    def digest(self) -> str:
        digest = hashlib.sha256()
        for key in sorted(self.pieces):
            digest.update(f"{key[0]}:{key[1]}\0{self.pieces[key]}\0".encode())
        return digest.hexdigest()

    def close(self, pending: list[tuple[str, str]]) -> str:
        """Follow every pending definition transitively, then hash what was reached."""
        while pending:
            pending.extend(self.add_definition(*pending.pop()))
        return self.digest()


def scoring_fingerprint(method_class: type, code: CodeSource | None = None) -> str | None:
    """sha256 of the method's package and the ``ssad`` definitions it reaches; None when a name cannot be found."""
    reach = _Reach(code or CodeSource())
    package = method_class.__module__.rsplit(".", 1)[0]
    try:
        modules = [name[:-3].replace("/", ".").removesuffix(".__init__") for name in reach.code.python_files(package.replace(".", "/"))]
        if not modules:
            return None
        pending: list[tuple[str, str]] = []
        for module in modules:
            tree = reach.tree(module)
            reach.pieces[(module, "*")] = ast.unparse(_without_docstrings(tree))
            for statement in tree.body:
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("ssad.") and statement.level == 0:
                    pending += [(statement.module, a.name) for a in statement.names if not statement.module.startswith(package)]
        return reach.close(pending)
    except (_Unresolved, OSError, SyntaxError):
        return None


def training_fingerprint(method_class: type, code: CodeSource | None = None) -> str | None:
    """sha256 of the code that turns training images into the method's weights; None when a name cannot be found."""
    reach = _Reach(code or CodeSource())
    try:
        pending = [
            reached
            for root in TRAINING_ROOTS
            for reached in reach.add_member(method_class.__module__, method_class.__name__, root)
        ]
        return reach.close(pending)
    except (_Unresolved, OSError, SyntaxError):
        return None
