"""The registry of methods: command-line ids and display names mapped to their classes."""

from __future__ import annotations

from ssad.errors import SsadError
from ssad.methods.base import Method, MethodConfig
from ssad.methods.ssm import SSM
from ssad.methods.st_ssad import STSSAD

METHODS: dict[str, type[Method]] = {cls.id: cls for cls in (SSM, STSSAD)}


def method_class(name: str) -> type[Method]:
    """The class for a method id (``ssm``) or display name (``SSM``); a clear error for anything else."""
    for cls in METHODS.values():
        if name in (cls.id, cls.display_name):
            return cls
    known = ", ".join(cls.id for cls in METHODS.values())
    raise SsadError(f"unknown method {name!r}; choose one of: {known}")


__all__ = ["METHODS", "Method", "MethodConfig", "method_class"]
