"""Replay: show that today's training code gives the weights that a model's own commit gave, so that a
refactor, or a model trained before fingerprints were recorded, does not force a retrain.

The model's config is trained for a few epochs twice, by the code of the commit that trained it (checked
out in a temporary git worktree) and by today's code, each in its own ``python -m ssad train`` process
with the same seed. When the two weights files agree tensor for tensor, today's code reproduces that
commit's training, and the model can take today's training fingerprint (``adopt``). Its scoring
fingerprint is then left unset, so that ``rebuild`` recalibrates it with today's scoring code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ssad.errors import SsadError
from ssad.fingerprint import training_fingerprint
from ssad.methods import method_class
from ssad.methods.base import CONFIG_FILE, WEIGHTS_FILE, read_config
from ssad.settings import CHECKOUT


@dataclass(frozen=True)
class WeightsComparison:
    """How two weights files differ: tensors compared, tensors that differ, and the largest difference."""

    tensors: int
    differing: tuple[str, ...]
    max_difference: float

    @property
    def identical(self) -> bool:
        return not self.differing


@dataclass(frozen=True)
class ReplayRecord:
    """One replay: the commit, the epochs and extra settings trained, and how today's weights compare."""

    commit: str
    epochs: int
    settings: tuple[str, ...]
    comparison: WeightsComparison
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["identical"] = self.comparison.identical
        return record


def compare_weights(first: Path, second: Path) -> WeightsComparison:
    """Compare two safetensors files tensor by tensor (a key present in only one counts as differing)."""
    a, b = load_file(first), load_file(second)
    differing, largest = [], 0.0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or a[name].shape != b[name].shape:
            differing.append(name)
            largest = float("inf")
        elif not torch.equal(a[name], b[name]):
            differing.append(name)
            largest = max(largest, float((a[name].double() - b[name].double()).abs().max()))
    return WeightsComparison(tensors=len(set(a) | set(b)), differing=tuple(differing), max_difference=largest)


def settings_mismatch(committed: dict[str, Any], replayed: dict[str, Any], replay_only: set[str]) -> str:
    """``field committed -> replayed`` for the training settings a replay did not reproduce ('' when all agree).

    Fields the replay set on purpose (the epochs, ``--set`` keys) and fields one side does not know
    (added or retired since) are not compared; the weights comparison covers what they do."""
    shared = (set(committed) & set(replayed)) - replay_only
    return ", ".join(f"{name} {committed[name]} -> {replayed[name]}" for name in sorted(shared) if committed[name] != replayed[name])


def _train_command(method_id: str, data: Path, out: Path, epochs: int, settings: tuple[str, ...]) -> list[str]:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    return [sys.executable, "-m", "ssad", "train", "--method", method_id, "--data", str(data), "--out", str(out), "--epochs", str(epochs), *sets]


def _git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SsadError(f"git {' '.join(args)}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'failed'}")
    return result.stdout.strip()


def replay(
    method_id: str, folder: Path, data: Path, epochs: int = 1, settings: tuple[str, ...] = (), commit: str | None = None
) -> ReplayRecord:
    """Train the model's config for ``epochs`` with the code of ``commit`` (default: the one that trained it)
    and with today's, in two processes side by side, and compare the weights they save."""
    cls = method_class(method_id)
    data = Path(data).resolve()  # the older code runs in its own worktree
    description = read_config(folder)
    if commit is None:
        commit = (description.get("info") or {}).get("commit") or ""
        if not commit or commit.endswith("-dirty"):
            reason = "was trained from modified files" if commit else "records no training commit"
            raise SsadError(f"{folder}: the model {reason}, so no commit holds its code; give --commit")
    commit = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    committed = cls.config_class.from_saved(description["config"]).training_settings()
    replay_only = {"epochs", *(setting.partition("=")[0] for setting in settings)}
    code_of = {"then": f"the code of commit {commit[:10]}", "now": "today's code"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssad-replay-") as scratch:
        then_code, out = Path(scratch) / "code", Path(scratch)
        _git("worktree", "add", "--detach", "--quiet", str(then_code), commit)
        runs: dict[str, subprocess.Popen] = {}
        try:
            for name, cwd in (("then", then_code), ("now", CHECKOUT)):
                with open(out / f"{name}.log", "w") as log:  # a file, not a pipe, which a long run's progress would fill
                    runs[name] = subprocess.Popen(_train_command(cls.id, data, out / name, epochs, settings), cwd=cwd, stdout=log, stderr=log)
            for name, run in runs.items():
                if run.wait() != 0:
                    lines = (out / f"{name}.log").read_text().replace("\r", "\n").strip().splitlines()
                    last = lines[-1] if lines else f"exit status {run.returncode}"
                    raise SsadError(f"training with {code_of[name]} failed: {last}")
        finally:
            for run in runs.values():
                run.kill()  # the other side, when one failed
            _git("worktree", "remove", "--force", str(then_code))
        for name in ("then", "now"):
            mismatch = settings_mismatch(committed, json.loads((out / name / CONFIG_FILE).read_text())["config"], replay_only)
            if mismatch:
                raise SsadError(f"the replay with {code_of[name]} trained other settings than the model's ({mismatch}); give them with --set")
        comparison = compare_weights(out / "then" / WEIGHTS_FILE, out / "now" / WEIGHTS_FILE)
    return ReplayRecord(commit=commit, epochs=epochs, settings=tuple(settings), comparison=comparison, seconds=round(time.perf_counter() - started, 1))


def adopt(method_id: str, folder: Path, record: ReplayRecord) -> None:
    """Record today's training fingerprint in the model's config.json, with the replay that earned it;
    the scoring fingerprint is cleared, so that the model is recalibrated before it counts as current."""
    if not record.comparison.identical:
        raise SsadError(f"{folder}: today's code did not reproduce the weights of commit {record.commit[:10]}; nothing adopted")
    description = read_config(folder)
    info = description.setdefault("info", {})
    info["fingerprints"] = {"training": training_fingerprint(method_class(method_id)), "replay": record.to_dict()}
    (folder / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
