"""Finding weights: the embedded ``weights/`` folder first, then the Hugging Face Hub cache, then a download.

A model is addressed as ``<method>/<dataset>/<category>`` both in ``weights/`` and in the Hub repository,
e.g. ``ssm/mvtec/bottle/model.safetensors``. Downloads are pinned to one commit: a branch or tag given as
the revision is resolved to its commit sha once per process, and every file of every model is fetched
at that sha, so a tag that moves cannot mix two commits. With ``HF_HUB_OFFLINE=1`` (read by
huggingface_hub at import) no request leaves the machine.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ssad.catalog import ModelId
from ssad.errors import WeightsError
from ssad.methods import Method, method_class
from ssad.methods.base import CONFIG_FILE, WEIGHTS_FILE
from ssad.settings import WEIGHTS_DIR

HUB_REPO = os.environ.get("SSAD_HUB_REPO", "ssad-project/ssad-weights")
HUB_REVISION = os.environ.get("SSAD_HUB_REVISION", "v0.1.0")
log = logging.getLogger(__name__)

Source = Literal["embedded", "hub cache", "hub download"]
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights folder and where it came from (shown in the app)."""

    folder: Path
    source: Source
    detail: str


def model_key(method_id: str, model: str) -> str:
    """The path of a model inside ``weights/`` and the Hub repo: ``ssm/mvtec/bottle``."""
    return f"{method_id}/{ModelId.parse(model)}"


def resolve_weights(
    method_id: str,
    model: str,
    *,
    weights_dir: Path | None = None,
    repo: str | None = None,
    revision: str | None = None,
    cache_dir: Path | None = None,
    allow_download: bool = True,
) -> ResolvedWeights:
    """Find the folder holding ``model.safetensors`` and ``config.json`` for a method and model."""
    key = model_key(method_id, model)
    local = (weights_dir or WEIGHTS_DIR) / key
    if (local / WEIGHTS_FILE).is_file() and (local / CONFIG_FILE).is_file():
        return ResolvedWeights(local, "embedded", str(local))
    repo, revision = repo or HUB_REPO, revision or HUB_REVISION
    # The cache is read at the sha this process pinned, or else at the ref an earlier download recorded.
    cached = _from_hub(key, repo, _pins.get((repo, revision), revision), cache_dir, local_files_only=True)
    if cached is not None:
        return ResolvedWeights(cached, "hub cache", f"{repo}@{revision} ({_commit_of(cached, key)})")
    if allow_download:
        try:
            commit = pinned_commit(repo, revision, cache_dir)
            downloaded = _from_hub(key, repo, commit, cache_dir, local_files_only=False)
        except Exception as error:  # network or Hub errors: the message below says what was tried
            raise WeightsError(
                f"no weights for {key}: not in {local}, not in the Hub cache, download from {repo}@{revision} failed ({type(error).__name__})"
            ) from None
        if downloaded is not None:
            return ResolvedWeights(downloaded, "hub download", f"{repo}@{revision} ({commit})")
    raise WeightsError(f"no weights for {key}: not in {local} nor in the Hub cache of {repo}@{revision} (offline)")


_pins: dict[tuple[str, str], str] = {}
_pin_lock = threading.Lock()


def pinned_commit(repo: str, revision: str, cache_dir: Path | None = None) -> str:
    """The commit sha that ``revision`` (branch, tag or sha) of ``repo`` names, asked of the Hub once per process.

    The answer is also recorded as ``refs/<revision>`` in the Hub cache (the cache's own layout), so that
    a later offline process finds the files it downloaded under the same revision name.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.file_download import repo_folder_name

    if COMMIT_SHA.fullmatch(revision) or constants.HF_HUB_OFFLINE:  # offline, nothing is asked and nothing downloaded
        return revision
    with _pin_lock:
        if (repo, revision) not in _pins:
            sha = HfApi().model_info(repo, revision=revision).sha
            if not sha or not COMMIT_SHA.fullmatch(sha):
                raise WeightsError(f"{repo}@{revision}: the Hub answered no commit sha")
            ref = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model") / "refs" / revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha)
            _pins[(repo, revision)] = sha
        return _pins[(repo, revision)]


def _commit_of(folder: Path, key: str) -> str:
    """The snapshot commit of a model folder in the Hub cache (``.../snapshots/<sha>/<key>``)."""
    return folder.parents[len(key.split("/")) - 1].name


def _from_hub(key: str, repo: str, revision: str, cache_dir: Path | None, local_files_only: bool) -> Path | None:
    """Both files of a model from the Hub at one revision (cache only, or with a download); None when not available."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    paths = []
    for filename in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            paths.append(
                Path(hf_hub_download(
                    repo, filename, subfolder=key, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
                ))
            )
        except (LocalEntryNotFoundError, OfflineModeIsEnabled):
            return None
    if paths[0].parent != paths[1].parent:  # both files must come from one snapshot (one commit)
        raise WeightsError(f"{key}: {CONFIG_FILE} and {WEIGHTS_FILE} came from different commits of {repo}")
    return paths[0].parent


_loaded: dict[tuple[str, str, str, str], tuple[Method, ResolvedWeights]] = {}
_lock = threading.Lock()


def load_model(
    method: str, model: str, device: str | torch.device = "cpu", weights_dir: Path | None = None
) -> tuple[Method, ResolvedWeights]:
    """Resolve and load a model once per process; later calls share the same instance."""
    cls = method_class(method)
    key = (cls.id, model, str(device), str(weights_dir or WEIGHTS_DIR))
    with _lock:
        if key not in _loaded:
            resolved = resolve_weights(cls.id, model, weights_dir=weights_dir)
            _loaded[key] = (cls.load(resolved.folder, device), resolved)
            log.info("loaded model %s %s from %s (%s)", cls.id, model, resolved.source, resolved.detail)
        return _loaded[key]


def embedded_models(weights_dir: Path | None = None) -> list[tuple[str, str]]:
    """(method id, dataset/category) of every model in ``weights/`` (or ``weights_dir``)."""
    return sorted(
        (path.parent.parent.parent.name, f"{path.parent.parent.name}/{path.parent.name}")
        for path in (weights_dir or WEIGHTS_DIR).glob(f"*/*/*/{WEIGHTS_FILE}")
    )


def available_models(weights_dir: Path | None = None, repo: str | None = None, revision: str | None = None) -> list[tuple[str, str]]:
    """(method id, dataset/category) of every model whose weights can be had: embedded, or in the Hub repository
    at the pinned revision (listed by the Hub once per process when online, read from the Hub cache offline)."""
    return sorted({*embedded_models(weights_dir), *_hub_models(repo or HUB_REPO, revision or HUB_REVISION)})


@functools.lru_cache(maxsize=8)
def _hub_models(repo: str, revision: str) -> tuple[tuple[str, str], ...]:
    from huggingface_hub import HfApi, constants
    from huggingface_hub.file_download import repo_folder_name

    if constants.HF_HUB_OFFLINE:
        cached = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
        ref = cached / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        names = [str(path.relative_to(cached / "snapshots" / commit)) for path in (cached / "snapshots" / commit).glob(f"*/*/*/{WEIGHTS_FILE}")]
    else:
        try:
            names = [sibling.rfilename for sibling in HfApi().model_info(repo, revision=pinned_commit(repo, revision)).siblings or []]
        except Exception as error:  # network or Hub errors: the Hub then offers nothing, and the page says why
            log.warning("cannot list %s@%s: %s", repo, revision, error)
            return ()
    parts = [name.split("/") for name in names]
    return tuple((p[0], f"{p[1]}/{p[2]}") for p in parts if len(p) == 4 and p[3] == WEIGHTS_FILE)
