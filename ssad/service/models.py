"""Which models exist and where their weights are, chosen and loaded on the device of the current call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssad.catalog import DATASETS, OCT_MODEL
from ssad.errors import WeightsError
from ssad.hub import HUB_REPO, HUB_REVISION, available_models, load_model, resolve_weights
from ssad.methods import METHODS, Method, method_class
from ssad.settings import CHECKOUT

USUAL_MODELS = tuple(f"mvtec/{category}" for category in DATASETS["mvtec"].categories) + (OCT_MODEL,)
"""The categories a visitor may look for; those without weights are listed in About with the reason."""

SessionModels = dict[tuple[str, str], Method]
"""Models trained in one browser session, by (method id, dataset/category)."""

SESSION_SOURCE = "trained in this session"


def current_device() -> torch.device:
    """The device of this call: CUDA when it is available now (inside ``@spaces.GPU`` on ZeroGPU), else the CPU.

    Read per call, never at import: on ZeroGPU the GPU exists only inside the decorated function.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_device(method: Method, device: torch.device) -> Method:
    """The method with its networks on ``device`` (a no-op when they are there already)."""
    if method.device != device:
        method.networks.to(device)
        method.device = device
        method.on_loaded()  # drops caches built on the previous device
    return method


def display_names() -> list[str]:
    """Display names of every registered method (SSM, ST-SSAD, SGSF), in registry order."""
    return [cls.display_name for cls in METHODS.values()]


def models_with_weights(weights_dir: Path | None = None) -> list[tuple[str, str]]:
    """(method id, dataset/category) of every model whose weights can be loaded here: the one place the
    app's model list comes from."""
    return available_models(weights_dir)


def model_choices(weights_dir: Path | None = None, session: SessionModels | None = None) -> list[str]:
    """Models to offer: this session's own, then every model some method has weights for."""
    own = [model for _, model in (session or {})]
    return list(dict.fromkeys([*own, *(model for _, model in models_with_weights(weights_dir))]))


def default_model(weights_dir: Path | None = None) -> str:
    """``mvtec/bottle`` when it has weights (or nothing has), else the first model with weights."""
    models = model_choices(weights_dir)
    return "mvtec/bottle" if "mvtec/bottle" in models or not models else models[0]


def default_method(model: str, weights_dir: Path | None = None) -> str:
    """The first registered method with weights for ``model`` (the first method when none has)."""
    names = display_names()
    return next((name for name in names if availability(name, model, weights_dir).available), names[0])


def hub_offline() -> bool:
    """Whether huggingface_hub was started offline (``HF_HUB_OFFLINE=1``, read at its import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def public_path(detail: str) -> str:
    """A weights location as a visitor may see it: relative to the repository, never a server path."""
    path = Path(detail)
    if not path.is_absolute():
        return detail
    try:
        return str(path.relative_to(CHECKOUT))
    except ValueError:
        return "/".join(path.parts[-3:])


@dataclass(frozen=True)
class Availability:
    """Whether a method has weights for a model, where they are, or why not."""

    method: str
    model: str
    source: str | None
    detail: str

    @property
    def available(self) -> bool:
        return self.source is not None

    def describe(self) -> str:
        """One line for the page: ``embedded (weights/ssm/mvtec/bottle)`` or the reason it is missing."""
        return f"{self.source} ({public_path(self.detail)})" if self.available else f"unavailable: {self.detail}"


def availability(
    method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None
) -> Availability:
    """Where a model's weights come from, or why they cannot be used; never downloads anything."""
    cls = method_class(method_name)
    if (cls.id, model) in (session or {}):
        return Availability(cls.display_name, model, SESSION_SOURCE, "kept in your browser session only")
    try:
        resolved = resolve_weights(cls.id, model, weights_dir=weights_dir, allow_download=False)
    except WeightsError as error:
        reason = str(error) if hub_offline() else f"{error}; it will be fetched from {HUB_REPO}@{HUB_REVISION} on first use"
        return Availability(cls.display_name, model, None, reason)
    try:  # weights found here are loaded (once, shared, on the CPU): a corrupt file shows as unavailable
        load_model(cls.id, model, "cpu", weights_dir)
    except WeightsError as error:
        return Availability(cls.display_name, model, None, str(error))
    return Availability(cls.display_name, model, resolved.source, resolved.detail)


def availability_table(weights_dir: Path | None = None) -> list[dict[str, str]]:
    """Every method for every usual or offered model: where its weights come from, or why they are missing."""
    models = dict.fromkeys([*model_choices(weights_dir), *USUAL_MODELS])
    return [
        {"method": where.method, "model": where.model, "weights": where.describe()}
        for model in models
        for where in (availability(name, model, weights_dir) for name in display_names())
    ]


def get_model(
    method_name: str, model: str, weights_dir: Path | None = None, session: SessionModels | None = None
) -> tuple[Method, str, str]:
    """The model on this call's device, with where it came from: this session's own, or resolved by ``ssad.hub``."""
    cls = method_class(method_name)
    device = current_device()
    if (cls.id, model) in (session or {}):
        return on_device(session[(cls.id, model)], device), SESSION_SOURCE, "kept in your browser session only"
    method, resolved = load_model(cls.id, model, device, weights_dir)
    return method, resolved.source, public_path(resolved.detail)
