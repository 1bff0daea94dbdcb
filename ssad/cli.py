"""Command line: ``python -m ssad train | evaluate | predict | calibrate | bench | replay | rebuild | select | publish`` (see the README).

Every user-facing problem ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ssad.data import load_image, open_dataset
from ssad.errors import SsadError
from ssad.evaluation import evaluate
from ssad.hub import load_model, resolve_weights
from ssad.methods import METHODS, Method, method_class
from ssad.methods.base import WEIGHTS_FILE, Progress, read_config, sha256_of
from ssad.precision import PRECISIONS, resolve_precision
from ssad.recipes import training_config
from ssad.settings import CHECKOUT


def tqdm_progress(description: str) -> tuple[Progress, Any]:
    """A progress callback drawing a tqdm bar on stderr, and the bar (to close)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="step", file=sys.stderr, dynamic_ncols=True, delay=1.0)  # none for a quick failure

    def progress(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.reset(total=total)
            bar.set_description(f"{description}: {message.split(' ')[0]}")
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return progress, bar


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SsadError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _load(args: argparse.Namespace, model: str | None) -> Method:
    device = _device(getattr(args, "device", "cpu"))
    if getattr(args, "weights", None):
        folder = Path(args.weights)
        if not folder.is_dir():
            raise SsadError(f"--weights {folder}: no such folder")
        return method_class(args.method).load(folder, device)
    if model is None:
        raise SsadError("give --weights WDIR or --model dataset/category")
    return load_model(args.method, model, device)[0]


def _emit(payload: dict[str, Any], json_file: str | None) -> None:
    text = json.dumps(payload, indent=2)
    print(text)
    if json_file:
        Path(json_file).write_text(text + "\n")


def _assignment(cls: type[Method], assignment: str, option: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for a field of a method's config; the value is JSON (numbers, lists, null) or plain text."""
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    key, sep, text = assignment.partition("=")
    if not sep or key not in fields:
        raise SsadError(f"{option} {assignment!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


def _config_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def config_overrides(cls: type[Method], assignments: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` settings for a method's config."""
    return {key: _config_value(value) for key, value in (_assignment(cls, a, "--set") for a in assignments)}


def grid_axes(cls: type[Method], assignments: list[str]) -> dict[str, list[Any]]:
    """``--grid KEY=[V1, V2, ...]`` settings: the values each config field takes in a selection."""
    axes = {}
    for assignment in assignments:
        key, values = _assignment(cls, assignment, "--grid")
        if not isinstance(values, list) or not values:
            raise SsadError(f"--grid {assignment!r}: the values must be a non-empty JSON list, e.g. {key}=[1, 2]")
        axes[key] = [_config_value(value) for value in values]
    return axes


def cmd_train(args: argparse.Namespace) -> None:
    cls = method_class(args.method)
    dataset = open_dataset(args.data)
    overrides = {name: getattr(args, name) for name in ("size", "epochs", "seed") if getattr(args, name) is not None}
    config = training_config(cls.id, dataset, {**config_overrides(cls, args.set), **overrides})
    torch.manual_seed(config.seed)
    progress, bar = tqdm_progress(f"train {cls.id} on {dataset.name}")
    try:
        method = cls(config, _device(args.device)).fit(dataset, progress)
    finally:
        bar.close()
    folder = method.save(args.out)
    print(json.dumps({"weights": str(folder), "model": dataset.name, "train_seconds": method.info["train_seconds"]}))


def cmd_evaluate(args: argparse.Namespace) -> None:
    dataset = open_dataset(args.data)
    method = _load(args, dataset.name)
    progress, bar = tqdm_progress(f"evaluate {method.id} on {dataset.name}")
    try:
        report = evaluate(method, dataset, progress)
    finally:
        bar.close()
    _emit(report, args.json)
    if args.leaderboard:
        from ssad.leaderboard import measured_rows, write_measured

        config = dataclasses.asdict(method.config)
        write_measured(measured_rows(report, method.info, config, method.display_name))


def cmd_predict(args: argparse.Namespace) -> None:
    method = _load(args, args.model)
    image = load_image(args.image)
    result = method.predict(image, with_frames=False)
    payload = {"score": result.score, "label": result.label, "threshold": result.threshold}
    if args.out:
        from PIL import Image

        from ssad.viz import result_overlay

        Image.fromarray(result_overlay(image, result)).save(args.out)
        payload["overlay"] = args.out
    _emit(payload, None)


def _training_folder(data: str | None, info: dict[str, Any]) -> Path:
    """The dataset folder given, else the one recorded with the weights (``info``; relative ones to the checkout)."""
    folder = Path(data or info.get("data") or "")
    if not folder.is_absolute() and not folder.is_dir():
        folder = CHECKOUT / folder  # training records the folder as given, often relative to the checkout
    return folder


def _model_on_disk(cls: type[Method], args: argparse.Namespace) -> Path:
    """The folder of ``--weights``, or of ``--model`` in the weights folder (never a download: it is rewritten)."""
    if args.weights:
        folder = Path(args.weights)
    else:
        resolved = resolve_weights(cls.id, args.model, allow_download=False)
        if resolved.source != "embedded":
            raise SsadError(f"{cls.id}/{args.model} is not in the weights folder ({resolved.source}); give --weights DIR")
        folder = resolved.folder
    if not folder.is_dir():
        raise SsadError(f"--weights {folder}: no such folder")
    return folder


def cmd_calibrate(args: argparse.Namespace) -> None:
    cls = method_class(args.method)
    folder = _model_on_disk(cls, args)
    method = cls.load(folder, _device(args.device))
    dataset = open_dataset(_training_folder(args.data, method.info))
    before = method.calibration
    progress, bar = tqdm_progress(f"calibrate {cls.id} on {dataset.name}")
    try:
        after = method.recalibrate(dataset, progress)
    finally:
        bar.close()
    method.save_config(folder)
    _emit(
        {
            "weights": str(folder),
            "weights_sha256": sha256_of(folder / WEIGHTS_FILE),
            "seconds": method.info["calibrated"]["seconds"],
            "before": before.to_dict() if before else None,
            "after": after.to_dict(),
        },
        args.json,
    )


def cmd_replay(args: argparse.Namespace) -> None:
    from ssad.replay import adopt, replay

    cls = method_class(args.method)
    folder = _model_on_disk(cls, args)
    data = _training_folder(args.data, read_config(folder).get("info") or {})
    record = replay(cls.id, folder, data, args.epochs, tuple(args.set), args.commit)
    if args.adopt:
        adopt(cls.id, folder, record)
    _emit({"weights": str(folder), **record.to_dict(), "adopted": bool(args.adopt)}, args.json)


def cmd_rebuild(args: argparse.Namespace) -> None:
    from ssad.rebuild import default_jobs, plan, rebuild, summary_table

    data = [Path(d) for d in args.data] if args.data else None
    for folder in data or []:
        open_dataset(folder)  # fail early, with the folder's name, before any job starts
    jobs = default_jobs(args.methods, data)
    if args.plan:
        print("\n".join(plan(jobs, args.retrain, args.reevaluate)))
        return

    def progress_for(job: Any) -> tuple[Progress, Any]:
        progress, bar = tqdm_progress(job.describe())
        return progress, bar.close

    records = rebuild(jobs, args.jobs, args.retrain, args.reevaluate, progress_for, log=lambda line: print(line, file=sys.stderr))
    print(summary_table(records))


def cmd_select(args: argparse.Namespace) -> None:
    from ssad.selection import select, select_scoring

    cls = method_class(args.method)
    axes = grid_axes(cls, args.grid)
    trained = _load(args, args.model) if args.model or args.weights else None
    if trained is None and not args.data:
        raise SsadError("give --data DIR to train candidates, or --model/--weights to rank scoring settings of a trained model")
    dataset = open_dataset(_training_folder(args.data, trained.info) if trained else args.data)
    progress, bar = tqdm_progress(f"select {cls.id} on {dataset.name}")
    try:
        if trained:
            report = select_scoring(trained, dataset, axes, args.copies, args.seed, progress)
        else:
            base = training_config(cls.id, dataset, config_overrides(cls, args.set))
            report = select(cls.id, dataset, base, axes, args.share, args.copies, args.seed, progress, _device(args.device))
    finally:
        bar.close()
    _emit(report, args.json)


def cmd_bench(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    method = _load(args, args.model or "mvtec/bottle")
    image = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    precision = resolve_precision(args.precision, method.device)
    models = {name: method.with_scoring_settings(precision=name) for name in dict.fromkeys(["fp32", precision])}
    for model in models.values():
        for _ in range(2):
            model.predict(image)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.n):  # interleaved, so that a change of machine load hits both alike
        for name, model in models.items():
            started = time.perf_counter()
            model.predict(image)
            times[name].append((time.perf_counter() - started) * 1000)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    _emit(
        {
            "method": method.id,
            "device": str(method.device),
            "threads": torch.get_num_threads(),
            "size": method.config.size,
            "precision": precision,
            "ms_per_image_median": medians[precision],
            "ms_per_image_p90": round(float(np.percentile(times[precision], 90)), 2),
            "fp32_ms_per_image_median": medians["fp32"],
            "speedup_over_fp32": round(medians["fp32"] / medians[precision], 2),
            "n": args.n,
        },
        args.json,
    )


def cmd_publish(args: argparse.Namespace) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from ssad.publish import chosen_models, publish, write_folder

    try:
        validate_repo_id(args.repo)
    except HFValidationError:
        raise SsadError(f"--repo {args.repo!r}: not a Hub repository id (OWNER/NAME)") from None
    if args.dry_run != bool(args.out):
        raise SsadError("--dry-run needs --out DIR, and --out is only for --dry-run")
    models = chosen_models(args.models)
    if args.dry_run:
        for folder in write_folder(Path(args.out), models, args.repo):
            print(folder)
        return
    try:
        print(publish(args.repo, models, args.revision))
    except OSError as error:  # network and Hub errors (huggingface_hub's HTTP errors are OSErrors)
        raise SsadError(f"publish to {args.repo}@{args.revision} failed: {str(error).splitlines()[0]}") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see python -m ssad {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_model_on_disk_arguments(command: argparse.ArgumentParser, method_help: str) -> None:
    """``--method``, ``--model`` or ``--weights``, and ``--data``: a model in a folder here and its training data."""
    command.add_argument("--method", required=True, help=method_help)
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="dataset/category of a model in the weights folder")
    source.add_argument("--weights", help="weights folder")
    command.add_argument("--data", help="the training dataset folder (default: the one recorded with the weights)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ssad", description="Self-supervised anomaly detection: SSM, ST-SSAD, SGSF.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    method_help = f"method id: {', '.join(METHODS)}"

    train = commands.add_parser("train", help="train a model on the normal images of a dataset folder")
    train.add_argument("--method", required=True, help=method_help)
    train.add_argument("--data", required=True, help="MVTec category, OCT2017 folder or folder of normal images")
    train.add_argument("--out", required=True, help="folder for model.safetensors and config.json")
    train.add_argument("--size", type=int, help="input size in pixels")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config field")
    train.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    train.set_defaults(run=cmd_train)

    evaluate_ = commands.add_parser("evaluate", help="score every test image and print the metrics as JSON")
    evaluate_.add_argument("--method", required=True, help=method_help)
    evaluate_.add_argument("--data", required=True)
    evaluate_.add_argument("--weights", help="weights folder (default: the model for this dataset)")
    evaluate_.add_argument("--json", help="also write the JSON to this file")
    evaluate_.add_argument("--leaderboard", action="store_true", help="record the figures as measured rows in leaderboard/results.csv")
    evaluate_.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    evaluate_.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="score one image")
    predict.add_argument("--method", required=True, help=method_help)
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="weights folder")
    source.add_argument("--model", help="dataset/category, e.g. mvtec/bottle")
    predict.add_argument("image")
    predict.add_argument("--out", help="write the heat-map overlay to this PNG")
    predict.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    predict.set_defaults(run=cmd_predict)

    calibrate = commands.add_parser(
        "calibrate", help="recompute a model's calibration from its held-out training normals; the weights file is not touched"
    )
    _add_model_on_disk_arguments(calibrate, method_help)
    calibrate.add_argument("--json")
    calibrate.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    calibrate.set_defaults(run=cmd_calibrate)

    replay_ = commands.add_parser(
        "replay", help="train a model's config briefly with the code of the commit that trained it and with today's; compare the weights"
    )
    _add_model_on_disk_arguments(replay_, method_help)
    replay_.add_argument("--epochs", type=int, default=1, help="epochs each side trains (default 1)")
    replay_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config field both sides train with")
    replay_.add_argument("--commit", help="the commit to replay (default: the one recorded with the weights)")
    replay_.add_argument("--adopt", action="store_true", help="when the weights agree, record today's training fingerprint with the model")
    replay_.add_argument("--json")
    replay_.set_defaults(run=cmd_replay)

    rebuild = commands.add_parser("rebuild", help="train (or reuse) and evaluate every method on every dataset; rewrite the measured leaderboard rows")
    rebuild.add_argument("--methods", nargs="+", help=f"method ids (default: all of {', '.join(METHODS)})")
    rebuild.add_argument("--data", nargs="+", help="dataset folders (default: the seven benchmark folders of ../shared/data)")
    rebuild.add_argument("--jobs", type=int, default=1, help="jobs run in parallel processes")
    rebuild.add_argument("--retrain", action="store_true", help="train even when the weights are current")
    rebuild.add_argument("--reevaluate", action="store_true", help="evaluate even when a report for the same weights exists")
    rebuild.add_argument("--plan", action="store_true", help="only say what each job would do (train, evaluate or reuse)")
    rebuild.set_defaults(run=cmd_rebuild)

    select = commands.add_parser(
        "select", help="rank candidate configs without test labels: set-aside training normals against forged copies of them"
    )
    select.add_argument("--method", required=True, help=method_help)
    select.add_argument("--data", help="dataset folder (to train candidates; with --model/--weights, default: the recorded one)")
    trained = select.add_mutually_exclusive_group()
    trained.add_argument("--model", help="rank scoring settings of this trained model (dataset/category) instead of training")
    trained.add_argument("--weights", help="rank scoring settings of the model in this folder instead of training")
    select.add_argument("--grid", action="append", required=True, metavar="KEY=[V1,V2,...]", help="values to try for a config field")
    select.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed config field (over the rebuild's budget)")
    select.add_argument("--share", type=float, default=0.15, help="share of the training normals set aside")
    select.add_argument("--copies", type=int, default=3, help="forged copies of each set-aside normal")
    select.add_argument("--seed", type=int, default=0, help="seed of the set-aside split and the forgeries")
    select.add_argument("--json")
    select.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    select.set_defaults(run=cmd_select)

    bench = commands.add_parser("bench", help="time single-image inference (median of --n runs after warm-up)")
    bench.add_argument("--method", required=True, help=method_help)
    bench.add_argument("--model", help="dataset/category (default mvtec/bottle)")
    bench.add_argument("--weights", help="weights folder instead of --model")
    bench.add_argument("--n", type=int, default=20)
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, all cores)")
    bench.add_argument("--precision", choices=PRECISIONS, default="auto", help="timed beside fp32 in the same run (default auto)")
    bench.add_argument("--json")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.set_defaults(run=cmd_bench)

    publish = commands.add_parser("publish", help="upload models with their model cards to a Hub repository; prints the commit sha")
    publish.add_argument("--repo", required=True, help="Hub model repository, OWNER/NAME (created if missing)")
    publish.add_argument("--revision", default="main", help="branch to commit to (default main)")
    publish.add_argument("--models", nargs="+", help="method/dataset/category, e.g. ssm/mvtec/bottle (default: every model in weights/)")
    publish.add_argument("--dry-run", action="store_true", help="only write the folder that would be uploaded")
    publish.add_argument("--out", help="with --dry-run: the folder to write")
    publish.set_defaults(run=cmd_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SsadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
