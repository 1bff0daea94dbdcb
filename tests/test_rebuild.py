"""The leaderboard rebuild: trains once, then reuses current weights and reports; a scoring change recalibrates,
a training change retrains."""

import csv
import dataclasses
import json
import shutil

import pytest

import ssad.rebuild as rebuild_module
from ssad.fingerprint import CodeSource, code_only, scoring_fingerprint, training_fingerprint
from ssad.leaderboard import COLUMNS
from ssad.methods import METHODS
from ssad.settings import CHECKOUT
from ssad.rebuild import Job, Places, plan, rebuild, summary_table

TINY = {"size": 32, "epochs": 1, "batch_size": 4, "base_width": 4, "refine_block": 4, "refine_iterations": 2}
CALIBRATION_EDIT = ("ssad/result.py", "pixel_max = float(map_maxima.max())", "pixel_max = float(map_maxima.max()) * 1.0")
TRAINING_EDIT = ("ssad/methods/ssm/method.py", "loss.backward()", "(loss * 2).backward()")


def test_code_only_ignores_docstrings_and_comments():
    base = "def f(x):\n    '''Doc.'''\n    return x + 1  # add\n"
    assert code_only(base) == code_only("def f(x):\n    '''Other words.'''\n    # note\n    return x + 1\n")
    assert code_only(base) != code_only("def f(x):\n    return x + 2\n")


class FakeSource(CodeSource):
    """A repository held in a dict: a method package using functions of a shared module."""

    def __init__(self, files: dict[str, str]):
        super().__init__()
        self.files = files

    def read(self, path):
        return self.files.get(path)

    def python_files(self, folder):
        return sorted(p for p in self.files if p.rsplit("/", 1)[0] == folder)


SHARED = """
SCALE = 2
def helper(x):
    return x * SCALE
def used(x):
    '''Used by the toy method.'''
    return helper(x) + 1
def unused(x):
    return x
def score(x):
    return x - 1
"""
TOY_METHOD = """
from ssad.shared import used, score
class Toy:
    def build_networks(self):
        return 1
    def train_networks(self, x):
        return self._step(used(x))
    def fit(self, x):
        self.calibrate(x)
        return self.train_networks(x)
    def _step(self, x):
        return x + 1
    def calibrate(self, x):
        return self.infer(x)
    def infer(self, x):
        return score(x)
"""
TOY = {
    "ssad/methods/toy/__init__.py": "from ssad.methods.toy.method import Toy\n",
    "ssad/methods/toy/method.py": TOY_METHOD,
    "ssad/shared/__init__.py": "from ssad.shared.ops import used, score\n",
    "ssad/shared/ops.py": SHARED,
}
Toy = type("Toy", (), {"__module__": "ssad.methods.toy.method"})


def fingerprints(files: dict[str, str]) -> tuple[str | None, str | None]:
    return training_fingerprint(Toy, FakeSource(files)), scoring_fingerprint(Toy, FakeSource(files))


@pytest.mark.parametrize(
    "edit, training_changes, scoring_changes",
    [
        (lambda s: s.replace("return x\n", "return -x\n"), False, False),  # a function the method never reaches
        (lambda s: s.replace("Used by the toy method.", "Reworded."), False, False),
        (lambda s: s + "\ndef new_loss(x):\n    return x\n", False, False),
        (lambda s: s.replace("x * SCALE", "x * SCALE * 3"), True, True),  # reached through used -> helper
        (lambda s: s.replace("SCALE = 2", "SCALE = 3"), True, True),  # a constant reached through helper
        (lambda s: s.replace("return x - 1", "return x - 2"), False, True),  # reached from infer only
    ],
)
def test_fingerprints_follow_what_training_and_scoring_reach(edit, training_changes, scoring_changes):
    before = fingerprints(TOY)
    after = fingerprints({**TOY, "ssad/shared/ops.py": edit(SHARED)})
    assert None not in before
    assert (before[0] != after[0], before[1] != after[1]) == (training_changes, scoring_changes)


def test_training_fingerprint_follows_members_but_stops_at_scoring():
    before = fingerprints(TOY)
    step_changed = fingerprints({**TOY, "ssad/methods/toy/method.py": TOY_METHOD.replace("return x + 1", "return x + 2")})
    infer_changed = fingerprints({**TOY, "ssad/methods/toy/method.py": TOY_METHOD.replace("return score(x)", "return -score(x)")})
    assert step_changed[0] != before[0] and step_changed[1] != before[1]
    assert infer_changed[0] == before[0] and infer_changed[1] != before[1]


@pytest.fixture
def code_copy(tmp_path):
    """A copy of the ssad package to edit, as a working tree would be."""
    root = tmp_path / "code"
    shutil.copytree(CHECKOUT / "ssad", root / "ssad", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(root, path: str, old: str, new: str) -> None:
    file = root / path
    text = file.read_text()
    assert old in text, f"{path} no longer holds {old!r}"
    file.write_text(text.replace(old, new, 1))


def test_real_methods_split_training_from_scoring(code_copy):
    classes = list(METHODS.values())

    def now():
        return [(training_fingerprint(c, CodeSource(code_copy)), scoring_fingerprint(c, CodeSource(code_copy))) for c in classes]

    before = now()
    assert all(None not in pair for pair in before)
    assert before == [(training_fingerprint(c), scoring_fingerprint(c)) for c in classes]  # the copy is the code
    edit(code_copy, *CALIBRATION_EDIT)
    after = now()
    assert [a[0] for a in after] == [b[0] for b in before]  # calibration code: no method needs a retrain
    assert all(a[1] != b[1] for a, b in zip(after, before))  # ... and every method a recalibration
    ssm = METHODS["ssm"]
    edit(code_copy, "ssad/methods/ssm/masks.py", "def complementary_masks(", "def unused_helper():\n    pass\n\n\ndef complementary_masks(")
    assert training_fingerprint(ssm, CodeSource(code_copy)) == after[0][0]  # code that no training reaches
    edit(code_copy, *TRAINING_EDIT)
    assert training_fingerprint(ssm, CodeSource(code_copy)) != after[0][0]


@pytest.fixture
def places(tmp_path):
    results = tmp_path / "results.csv"
    with open(results, "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=COLUMNS).writeheader()
    return Places(weights=tmp_path / "weights", state=tmp_path / "state", results=results)


def test_rebuild_trains_then_reuses_and_resumes(places, synthetic_category):
    job = Job("ssm", synthetic_category, TINY)
    first = rebuild([job], places=places, log=lambda line: None)
    assert first[0]["step"] == ["train", "no weights"] and first[0]["evaluated"]
    weights = places.weights / "ssm" / "mvtec" / "synth" / "model.safetensors"
    sha = weights.read_bytes()

    second = rebuild([job], places=places, log=lambda line: None)
    assert second[0]["step"] is None and not second[0]["evaluated"]
    assert second[0]["report"] == first[0]["report"] and weights.read_bytes() == sha

    # An interrupted run leaves no report: the weights are reused and only the evaluation runs again.
    shutil.rmtree(places.state)
    third = rebuild([job], places=places, log=lambda line: None)
    assert third[0]["step"] is None and third[0]["evaluated"]
    assert third[0]["report"]["image_auroc"] == pytest.approx(first[0]["report"]["image_auroc"], abs=1e-3)

    changed = rebuild([Job("ssm", synthetic_category, {**TINY, "epochs": 2})], places=places, log=lambda line: None)
    assert changed[0]["step"] == ["train", "training settings changed (epochs 1 -> 2)"]

    with open(places.results, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["metric"] == "image_auroc"]
    assert len(rows) == 1 and rows[0]["source"] == "measured" and rows[0]["epochs"] == "2"
    assert rows[0]["commit"] and rows[0]["device"] and rows[0]["category"] == "synth"
    assert "mvtec/synth" in summary_table(changed)


def test_plan_says_what_each_job_would_do_and_does_nothing(places, synthetic_category):
    job = Job("ssm", synthetic_category, TINY)
    assert plan([job], places=places) == [f"{job.describe()}: train (no weights), evaluate"]
    assert not places.weights.exists() and not places.state.exists()
    rebuild([job], places=places, log=lambda line: None)
    assert plan([job], places=places) == [f"{job.describe()}: reuse weights and report"]
    assert plan([job], reevaluate=True, places=places) == [f"{job.describe()}: reuse weights, evaluate"]
    assert plan([job], retrain=True, places=places) == [f"{job.describe()}: train (--retrain), evaluate"]
    shutil.rmtree(places.state)
    assert plan([job], places=places) == [f"{job.describe()}: reuse weights, evaluate"]


def test_a_models_recipe_applies_over_its_kinds(monkeypatch, synthetic_category):
    from ssad import recipes
    from ssad.data import open_dataset

    dataset = open_dataset(synthetic_category)  # mvtec/synth: 24 training images, 2 held out, 22 trained on
    monkeypatch.setattr(recipes, "RECIPES", {
        ("ssm", "*"): {"steps": 30, "lr": 0.3},
        ("ssm", "mvtec"): {"lr": 0.5},
        ("ssm", "mvtec/synth"): {"epochs": 9},
        ("ssm", "mvtec/other"): {"lr": 0.1},
        ("sgsf", "*"): {"steps": 12, "recon_share": 0.5, "batch_size": 4},
    })
    config = rebuild_module.job_config(Job("ssm", synthetic_category), dataset)
    assert (config.epochs, config.lr, config.input_shape) == (9, 0.5, (128, 128))
    assert rebuild_module.job_config(Job("ssm", synthetic_category, {"epochs": 3}), dataset).epochs == 3
    sgsf = rebuild_module.job_config(Job("sgsf", synthetic_category), dataset)
    assert (sgsf.epochs, sgsf.recon_epochs) == (2, 1)  # 12 steps of 6 a epoch (22 images, batch 4)


def test_sgsf_forges_anywhere_on_a_surface_and_on_the_object_elsewhere(tmp_path):
    from ssad.data import make_synthetic_mvtec, open_dataset
    from ssad.recipes import training_config

    for model, saliency in (("kolektorsdd/commutator", "uniform"), ("mvtec/tile", "uniform"), ("mvtec/bottle", "combined")):
        dataset_name, category = model.split("/")
        folder = make_synthetic_mvtec(tmp_path / dataset_name, category, n_train=4, n_test_per_type=1, size=32)
        assert training_config("sgsf", open_dataset(folder)).saliency == saliency, model


def test_plan_recalibrates_after_a_scoring_change_and_retrains_after_a_training_change(places, synthetic_category, code_copy):
    places = dataclasses.replace(places, code=code_copy)
    job = Job("ssm", synthetic_category, TINY)
    rebuild([job], places=places, log=lambda line: None)
    weights = places.weights / "ssm" / "mvtec" / "synth" / "model.safetensors"
    sha = weights.read_bytes()
    assert plan([job], places=places) == [f"{job.describe()}: reuse weights and report"]

    new_setting = Job("ssm", synthetic_category, {**TINY, "refine_ratio": 0.7})
    assert plan([new_setting], places=places) == [
        f"{job.describe()}: recalibrate (scoring settings changed (refine_ratio 0.8 -> 0.7)), evaluate"
    ]
    edit(code_copy, *CALIBRATION_EDIT)
    assert plan([job], places=places) == [f"{job.describe()}: recalibrate (scoring code changed), evaluate"]
    recalibrated = rebuild([job], places=places, log=lambda line: None)
    assert recalibrated[0]["step"] == ["recalibrate", "scoring code changed"] and recalibrated[0]["evaluated"]
    assert weights.read_bytes() == sha

    edit(code_copy, *TRAINING_EDIT)
    assert plan([job], places=places) == [f"{job.describe()}: train (training code changed), evaluate"]


def test_a_changed_training_set_and_a_model_without_fingerprints_retrain(places, synthetic_category, tmp_path):
    data = tmp_path / "mvtec" / "synth"
    shutil.copytree(synthetic_category, data)
    job = Job("ssm", data, TINY)
    rebuild([job], places=places, log=lambda line: None)
    shutil.copy(next((data / "train" / "good").glob("*.png")), data / "train" / "good" / "extra.png")
    assert plan([job], places=places) == [f"{job.describe()}: train (the training images changed), evaluate"]
    (data / "train" / "good" / "extra.png").unlink()

    config_file = places.weights / "ssm" / "mvtec" / "synth" / "config.json"
    description = json.loads(config_file.read_text())
    del description["info"]["fingerprints"]
    config_file.write_text(json.dumps(description))
    assert "before code fingerprints were recorded" in plan([job], places=places)[0]


def test_train_defaults_reproduce_every_committed_config():
    """``train`` with its defaults (the recipe) gives each committed model's recorded config, so nothing is stale by accident."""
    from conftest import real_data
    from ssad.catalog import BENCHMARK_FOLDERS
    from ssad.data import open_dataset
    from ssad.hub import WEIGHTS_DIR
    from ssad.methods import method_class
    from ssad.methods.base import read_config
    from ssad.recipes import training_config

    datasets = {dataset.name: dataset for dataset in (open_dataset(real_data(folder)) for folder in BENCHMARK_FOLDERS)}
    differences = {}
    for config_file in sorted(WEIGHTS_DIR.glob("*/*/*/config.json")):
        description = read_config(config_file.parent)
        cls = method_class(description["method"])
        model = f"{config_file.parts[-3]}/{config_file.parts[-2]}"
        recorded = json.loads(json.dumps(dataclasses.asdict(cls.config_class.from_saved(description["config"]))))
        default = json.loads(json.dumps(dataclasses.asdict(training_config(cls.id, datasets[model]))))
        changed = {k: (recorded.get(k), default.get(k)) for k in recorded.keys() | default.keys() if recorded.get(k) != default.get(k)}
        if changed:
            differences[f"{cls.id} {model}"] = changed
    assert not differences, differences
