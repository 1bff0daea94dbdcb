"""Rebuild the measured leaderboard: train (or reuse) and evaluate every method on every dataset given.

Each (method, dataset) job is independent and does the cheapest step that makes its model current:
it trains into ``weights/<method>/<model>`` when what shaped the weights changed (the training settings
of the config, the training images, or the training code: see ``ssad.fingerprint``), recalibrates the
weights as they are when only scoring settings or scoring code changed, then evaluates and keeps its
report in ``runs/rebuild/``. A job whose report exists for the same weights and calibration is not
evaluated again, so an interrupted rebuild resumes where it stopped. With ``jobs > 1`` the jobs run in
parallel processes.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import torch

from ssad.catalog import BENCHMARK_FOLDERS
from ssad.data import AnomalyDataset, open_dataset
from ssad.evaluation import EvaluationReport, evaluate
from ssad.hub import WEIGHTS_DIR
from ssad.leaderboard import RESULTS_FILE, measured_rows, write_measured
from ssad.methods import METHODS, Method, method_class
from ssad.methods.base import (
    CONFIG_FILE, WEIGHTS_FILE, MethodConfig, Progress, no_progress, read_config, sha256_of, training_set_change,
)
from ssad.recipes import training_config
from ssad.fingerprint import CodeSource, scoring_fingerprint, training_fingerprint
from ssad.settings import CHECKOUT, DATA_DIR, RUNS_DIR

STATE_DIR = RUNS_DIR / "rebuild"
DEFAULT_DATA = [DATA_DIR / name for name in BENCHMARK_FOLDERS]

@dataclass(frozen=True)
class Places:
    """Where a rebuild reads and writes (weights, per-job reports, the results table) and the code it fingerprints."""

    weights: Path = WEIGHTS_DIR
    state: Path = STATE_DIR
    results: Path = RESULTS_FILE
    code: Path = CHECKOUT


@dataclass(frozen=True)
class Job:
    """One method on one dataset folder."""

    method: str
    data: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.method} on {self.data}"


def job_config(job: Job, dataset: AnomalyDataset) -> MethodConfig:
    """The config the job trains with: the recipe for this method and dataset, then the job's overrides."""
    return training_config(job.method, dataset, job.overrides)


Step = tuple[Literal["train", "recalibrate"], str]
"""What a model needs before it is current, and why."""


class JobRecord(TypedDict):
    """One job's outcome, kept in ``runs/rebuild/<method>__<dataset>__<category>.json``: the report and what made it."""

    job: str
    weights: str
    weights_sha256: str
    config_sha256: str
    report: EvaluationReport
    info: dict[str, Any]
    config: dict[str, Any]
    display_name: str
    step: list[str] | None
    evaluated: NotRequired[bool]


def needed_step(cls: type[Method], folder: Path, config: MethodConfig, dataset: AnomalyDataset, code: CodeSource | None = None) -> Step | None:
    """("train", why) when the weights in ``folder`` must be trained again with ``config``, ("recalibrate", why)
    when they can stay and only their calibration must be redone, None when they are current."""
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return "train", "no weights"
    description = read_config(folder)
    if description.get("weights_sha256") != sha256_of(folder / WEIGHTS_FILE):
        return "train", "weights file does not match its checksum"
    trained = cls.config_class.from_saved(description["config"])
    changed = _changed_fields(trained.training_settings(), config.training_settings())
    if changed:
        return "train", f"training settings changed ({changed})"
    info = description.get("info") or {}
    changed = training_set_change(info, dataset)
    if changed:
        return "train", changed
    fingerprints = info.get("fingerprints") or {}
    if not fingerprints.get("training"):
        return "train", f"trained at {info.get('commit')}, before code fingerprints were recorded"
    if fingerprints.get("training") != training_fingerprint(cls, code):
        return "train", "training code changed"
    scoring_now = {f: v for f, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if f in config.scoring_fields}
    scoring_then = {f: v for f, v in json.loads(json.dumps(dataclasses.asdict(trained))).items() if f in trained.scoring_fields}
    changed = _changed_fields(scoring_then, scoring_now)
    if changed:
        return "recalibrate", f"scoring settings changed ({changed})"
    if fingerprints.get("scoring") != scoring_fingerprint(cls, code):
        return "recalibrate", "scoring code changed"
    return None


def _changed_fields(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``name old -> new`` for each field that differs, comma-separated ('' when none)."""
    names = sorted(set(before) | set(after))
    return ", ".join(f"{n} {before.get(n)} -> {after.get(n)}" for n in names if before.get(n) != after.get(n))


def _resolve(job: Job, places: Places) -> tuple[type[Method], AnomalyDataset, Path, Path, Any]:
    """The job's method class, dataset, weights folder, report file and training config."""
    cls = method_class(job.method)
    dataset = open_dataset(job.data)
    folder = places.weights / cls.id / dataset.name
    state_file = places.state / f"{cls.id}__{dataset.name.replace('/', '__')}.json"
    return cls, dataset, folder, state_file, job_config(job, dataset)


def _model_checksums(folder: Path) -> dict[str, str]:
    """The checksums that identify a model as evaluated: its weights and its config (which holds the calibration)."""
    return {"weights_sha256": sha256_of(folder / WEIGHTS_FILE), "config_sha256": sha256_of(folder / CONFIG_FILE)}


def _reusable_report(state_file: Path, checksums: dict[str, str]) -> JobRecord | None:
    """The job's saved record when it was made for this very model (weights and calibration), else None."""
    if not state_file.is_file():
        return None
    record = json.loads(state_file.read_text())
    return record if all(record.get(key) == value for key, value in checksums.items()) else None


def _step(job: Job, places: Places, retrain: bool) -> tuple[type[Method], AnomalyDataset, Path, Path, Any, Step | None]:
    """The job's resolved parts and the step its model needs (``--retrain`` forces training)."""
    cls, dataset, folder, state_file, config = _resolve(job, places)
    step = ("train", "--retrain") if retrain else needed_step(cls, folder, config, dataset, CodeSource(places.code))
    return cls, dataset, folder, state_file, config, step


def plan(jobs: list[Job], retrain: bool = False, reevaluate: bool = False, places: Places = Places()) -> list[str]:
    """What :func:`rebuild` would do for each job, one line each, without training or evaluating anything."""
    lines = []
    for job in jobs:
        _, _, folder, state_file, _, step = _step(job, places, retrain)
        if step is not None:
            action = f"{step[0]} ({step[1]}), evaluate"
        elif reevaluate or _reusable_report(state_file, _model_checksums(folder)) is None:
            action = "reuse weights, evaluate"
        else:
            action = "reuse weights and report"
        lines.append(f"{job.describe()}: {action}")
    return lines


def run_job(
    job: Job, places: Places = Places(), retrain: bool = False, reevaluate: bool = False, progress: Progress = no_progress
) -> JobRecord:
    """Train or recalibrate if needed, evaluate if needed; returns the job's record (report, what was done, weights)."""
    cls, dataset, folder, state_file, config, step = _step(job, places, retrain)
    if step is not None and step[0] == "train":
        cls(config).fit(dataset, progress).save(folder)
    elif step is not None:
        method = cls.load(folder)
        method.adopt_scoring_settings(config)
        method.recalibrate(dataset, progress)
        method.save_config(folder)
    checksums = _model_checksums(folder)
    record = None if reevaluate or step is not None else _reusable_report(state_file, checksums)
    if record is not None:
        return {**record, "step": None, "evaluated": False}
    method = cls.load(folder)
    report = evaluate(method, dataset, progress)
    record: JobRecord = {
        "job": job.describe(),
        "weights": str(folder.relative_to(CHECKOUT)) if folder.is_relative_to(CHECKOUT) else str(folder),
        **checksums,
        "report": report,
        "info": method.info,
        "config": dataclasses.asdict(method.config),
        "display_name": cls.display_name,
        "step": list(step) if step else None,
    }
    places.state.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(record, indent=2) + "\n")
    return {**record, "evaluated": True}


def _run_quietly(job: Job, places: Places, retrain: bool, reevaluate: bool, threads: int) -> JobRecord:
    torch.set_num_threads(threads)
    return run_job(job, places, retrain, reevaluate)


def rebuild(
    jobs: list[Job], parallel: int = 1, retrain: bool = False, reevaluate: bool = False,
    progress_for: Any = None, log: Any = print, places: Places = Places(),
) -> list[JobRecord]:
    """Run every job (in ``parallel`` processes when above 1), then write the measured rows of all of them."""
    records = []
    if parallel <= 1:
        for index, job in enumerate(jobs, 1):
            log(f"[{index}/{len(jobs)}] {job.describe()}")
            progress, close = progress_for(job) if progress_for else (no_progress, lambda: None)
            try:
                records.append(run_job(job, places, retrain, reevaluate, progress))
            finally:
                close()
            log(_done_line(records[-1]))
    else:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(parallel, mp_context=context) as pool:
            futures = [pool.submit(_run_quietly, job, places, retrain, reevaluate, threads) for job in jobs]
            for index, future in enumerate(futures, 1):
                records.append(future.result())
                log(f"[{index}/{len(jobs)}] {_done_line(records[-1])}")
    for record in records:
        write_measured(measured_rows(record["report"], record["info"], record["config"], record["display_name"]), places.results)
    return records


def _done_line(record: JobRecord) -> str:
    step = record["step"]
    action = {"train": "trained", "recalibrate": "recalibrated"}[step[0]] + f" ({step[1]})" if step else "reused weights"
    return f"{record['job']}: {action}, {'evaluated' if record['evaluated'] else 'report reused'}"


def summary_table(records: list[JobRecord]) -> str:
    """A plain-text table: one line per job with its metrics (percent) and training minutes."""
    metrics = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "image_f1_max")
    header = f"{'method':<8} {'model':<14} " + " ".join(f"{m:>12}" for m in metrics) + f" {'train min':>9}"
    lines = [header, "-" * len(header)]
    for record in records:
        report = record["report"]
        values = " ".join(f"{100 * report[m]:>12.1f}" if report.get(m) is not None else f"{'n/a':>12}" for m in metrics)
        minutes = record["info"].get("train_seconds", 0) / 60
        lines.append(f"{report['method']:<8} {report['dataset'] + '/' + report['category']:<14} {values} {minutes:>9.1f}")
    return "\n".join(lines)


def default_jobs(methods: list[str] | None = None, data: list[Path] | None = None) -> list[Job]:
    """Every registered method (or those named) on every data folder given (default: bottle, pill, OCT)."""
    return [Job(method_class(m).id, Path(d)) for m in (methods or list(METHODS)) for d in (data or DEFAULT_DATA)]

