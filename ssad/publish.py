"""Publishing weights to the Hugging Face Hub: one folder per model, each with a model card.

The repository mirrors ``weights/``: ``<method>/<dataset>/<category>/`` holds ``model.safetensors``,
``config.json`` and ``README.md``, the model's card (YAML metadata the Hub reads, its measured metrics
from ``leaderboard/results.csv`` as ``model-index`` eval results, and how it was trained and is loaded).
``ssad.hub`` pulls the same layout back. The upload is one commit made with ``HfApi.upload_folder``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from ssad.catalog import DATASETS as CATALOG
from ssad.errors import SsadError
from ssad.hub import WEIGHTS_DIR, embedded_models, model_key
from ssad.leaderboard import METRICS, Leaderboard, load_leaderboard
from ssad.methods import method_class
from ssad.methods.base import CONFIG_FILE, WEIGHTS_FILE

CARD_FILE = "README.md"


def chosen_models(models: list[str] | None, weights_dir: Path | None = None) -> list[tuple[str, str]]:
    """(method id, dataset/category) for each ``method/dataset/category`` given, or every embedded model."""
    folder = weights_dir or WEIGHTS_DIR
    if not models:
        found = embedded_models(folder)
        if not found:
            raise SsadError(f"no models to publish: {folder} holds no <method>/<dataset>/<category>/{WEIGHTS_FILE}")
        return found
    chosen = []
    for name in models:
        method, _, model = name.partition("/")
        key = model_key(method_class(method).id, model)
        if not (folder / key / WEIGHTS_FILE).is_file() or not (folder / key / CONFIG_FILE).is_file():
            raise SsadError(f"{name}: no {WEIGHTS_FILE} and {CONFIG_FILE} in {folder / key}")
        chosen.append((method_class(method).id, model))
    return chosen


def eval_results(method_id: str, model: str, board: Leaderboard) -> list[EvalResult]:
    """The model's measured leaderboard rows as Hub eval results (one per metric, fractions in [0, 1])."""
    dataset, category = model.split("/")
    rows = board.rows[
        (board.rows["method"] == method_class(method_id).display_name) & (board.rows["dataset"] == dataset)
        & (board.rows["category"] == category) & (board.rows["source"] == "measured")
    ]
    return [
        EvalResult(
            task_type="anomaly-detection", task_name="Image anomaly detection",
            dataset_type=CATALOG[dataset].hub_id or dataset, dataset_name=CATALOG[dataset].label, dataset_config=category,
            dataset_split="test", metric_type=row.metric, metric_name=METRICS[row.metric], metric_value=float(row.value),
            verified=False,
        )
        for row in rows.itertuples()
        if row.metric in METRICS
    ]


def model_card(method_id: str, model: str, description: dict, board: Leaderboard, repo: str) -> ModelCard:
    """The card of one model: Hub metadata, measured metrics, training, configuration and loading."""
    cls = method_class(method_id)
    dataset = model.split("/")[0]
    key, data, info = model_key(cls.id, model), CATALOG[dataset], description.get("info", {})
    results = eval_results(cls.id, model, board)
    metadata = ModelCardData(
        library_name="ssad", license=data.license, datasets=[data.hub_id] if data.hub_id else None,
        tags=["anomaly-detection", "self-supervised", "safetensors", cls.id, dataset],
        model_name=f"ssad {cls.display_name} {model}", eval_results=results or None,
    )
    figures = "\n".join(f"| {METRICS[r.metric_type]} | {100 * r.metric_value:.1f} |" for r in results) or "| (none measured) | |"
    text = f"""---
{metadata.to_yaml()}
---

# ssad · {cls.display_name} on {model}

A {cls.display_name} anomaly detector trained by ssad on the normal images of {data.label} `{model}`
only. Files: `{key}/{WEIGHTS_FILE}` (safetensors) and
`{key}/{CONFIG_FILE}` (configuration, calibration, sha256 of the weights, provenance).

## Measured on the test split (percent)

| metric | value |
|---|---|
{figures}

## Training

`python -m ssad train --method {cls.id} --data {info.get('data', '<dataset folder>')} --out weights/{key}` with
the configuration below (`--set KEY=VALUE` sets any field; `python -m ssad rebuild` applies the budget of
each dataset), on {info.get('n_train', '?')} training images, {info.get('n_held_out', '?')} more held out for the score
calibration: {info.get('train_seconds', '?')} s on {info.get('device', '?')}, torch {info.get('torch', '?')},
code commit {info.get('commit', '?')}, {info.get('date', '?')}.

Configuration:

```json
{json.dumps(description.get('config', {}), indent=1)}
```

## Loading

```python
from pathlib import Path
from huggingface_hub import snapshot_download
from ssad.methods import method_class

folder = snapshot_download("{repo}", revision="<commit sha>", allow_patterns="{key}/*")
detector = method_class("{cls.id}").load(Path(folder) / "{key}")  # checks the sha256 in config.json
result = detector.predict(image)  # image: an RGB uint8 array
```

Or let the app fetch it: `SSAD_HUB_REPO={repo} SSAD_HUB_REVISION=<commit sha> python app.py`.

## Licence

{data.credit} The ssad code is MIT.
"""
    return ModelCard(text)


def write_folder(out: Path, models: list[tuple[str, str]], repo: str, weights_dir: Path | None = None) -> list[Path]:
    """Write ``out/<method>/<dataset>/<category>/`` (weights, config, card) for each model; the folders written."""
    source, board = weights_dir or WEIGHTS_DIR, load_leaderboard()
    written = []
    for method_id, model in models:
        key = model_key(method_id, model)
        target = out / key
        target.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(source / key / name, target / name)
        description = json.loads((source / key / CONFIG_FILE).read_text())
        model_card(method_id, model, description, board, repo).save(target / CARD_FILE)
        written.append(target)
    return written


def publish(repo: str, models: list[tuple[str, str]], revision: str = "main", weights_dir: Path | None = None) -> str:
    """Upload the models to the Hub repository ``repo`` (created if missing) in one commit; its sha."""
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    if revision != "main":
        api.create_branch(repo, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssad-publish-") as staging:
        write_folder(Path(staging), models, repo, weights_dir)
        names = ", ".join(model_key(method, model) for method, model in models)
        info = api.upload_folder(folder_path=staging, repo_id=repo, revision=revision, commit_message=f"ssad weights: {names}")
    return info.oid
