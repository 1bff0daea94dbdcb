"""The leaderboard rebuild: trains once, then reuses current weights and reports; stale weights retrain."""

import csv
import shutil

import pytest

import ssad.provenance as provenance
import ssad.rebuild as rebuild_module
from ssad.leaderboard import COLUMNS
from ssad.fingerprint import CodeSource, code_fingerprint, code_only
from ssad.rebuild import Job, Places, plan, rebuild, summary_table

TINY = {"size": 32, "epochs": 1, "batch_size": 4, "base_width": 4, "refine_block": 4, "refine_iterations": 2}


def test_code_only_ignores_docstrings_and_comments():
    base = "def f(x):\n    '''Doc.'''\n    return x + 1  # add\n"
    assert code_only(base) == code_only("def f(x):\n    '''Other words.'''\n    # note\n    return x + 1\n")
    assert code_only(base) != code_only("def f(x):\n    return x + 2\n")


class FakeSource(CodeSource):
    """A repository held in a dict: a method package using one function of a shared module."""

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
"""
TOY = {
    "ssad/methods/toy/__init__.py": "from ssad.methods.toy.method import Toy\n",
    "ssad/methods/toy/method.py": "from ssad.shared import used\nclass Toy:\n    def run(self, x):\n        return used(x)\n",
    "ssad/shared/__init__.py": "from ssad.shared.ops import used\n",
    "ssad/shared/ops.py": SHARED,
}


@pytest.mark.parametrize(
    "edit, changes",
    [
        (lambda s: s.replace("return x\n", "return -x\n"), False),  # a function the method never reaches
        (lambda s: s.replace("Used by the toy method.", "Reworded."), False),
        (lambda s: s + "\ndef new_loss(x):\n    return x\n", False),
        (lambda s: s.replace("x * SCALE", "x * SCALE * 3"), True),  # reached through used -> helper
        (lambda s: s.replace("SCALE = 2", "SCALE = 3"), True),  # a constant reached through helper
    ],
)
def test_fingerprint_follows_what_the_method_reaches(edit, changes):
    before = code_fingerprint("ssad.methods.toy", code=FakeSource(TOY))
    after = code_fingerprint("ssad.methods.toy", code=FakeSource({**TOY, "ssad/shared/ops.py": edit(SHARED)}))
    assert before is not None and (before != after) == changes


def test_fingerprint_of_the_real_methods_and_unknown_commits():
    for package in ("ssad.methods.ssm", "ssad.methods.sgsf", "ssad.methods.st_ssad"):
        assert code_fingerprint(package) is not None
        assert code_fingerprint(package, "0" * 40) is None
        assert code_fingerprint(package, "abc-dirty") is None


@pytest.fixture
def places(tmp_path, monkeypatch):
    results = tmp_path / "results.csv"
    with open(results, "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=COLUMNS).writeheader()
    # Weights trained in a dirty working tree can never be shown current; pin the commit and the code
    # fingerprint (tested above) so that the reuse logic (config and checksum) is what this test checks.
    monkeypatch.setattr(provenance, "git_commit", lambda: "abc1234")
    monkeypatch.setattr(rebuild_module, "code_fingerprint", lambda package, commit=None: "same code")
    return Places(weights=tmp_path / "weights", state=tmp_path / "state", results=results)


def test_rebuild_trains_then_reuses_and_resumes(places, synthetic_category):
    job = Job("ssm", synthetic_category, TINY)
    first = rebuild([job], places=places, log=lambda line: None)
    assert first[0]["trained"] and first[0]["evaluated"] and first[0]["why_trained"] == "no weights"
    weights = places.weights / "ssm" / "mvtec" / "synth" / "model.safetensors"
    sha = weights.read_bytes()

    second = rebuild([job], places=places, log=lambda line: None)
    assert not second[0]["trained"] and not second[0]["evaluated"]
    assert second[0]["report"] == first[0]["report"] and weights.read_bytes() == sha

    # An interrupted run leaves no report: the weights are reused and only the evaluation runs again.
    shutil.rmtree(places.state)
    third = rebuild([job], places=places, log=lambda line: None)
    assert not third[0]["trained"] and third[0]["evaluated"]
    assert third[0]["report"]["image_auroc"] == pytest.approx(first[0]["report"]["image_auroc"], abs=1e-3)

    changed = rebuild([Job("ssm", synthetic_category, {**TINY, "epochs": 2})], places=places, log=lambda line: None)
    assert changed[0]["trained"] and changed[0]["why_trained"] == "config changed"

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


def test_a_models_budget_applies_over_its_kinds(monkeypatch, synthetic_category):
    from ssad.data import open_dataset
    from ssad.methods.sgsf import SGSFConfig

    dataset = open_dataset(synthetic_category)  # mvtec/synth
    budgets = {("ssm", "mvtec"): {"epochs": 7, "lr": 0.5}, ("ssm", "mvtec/synth"): {"epochs": 9}, ("ssm", "mvtec/other"): {"lr": 0.1}}
    monkeypatch.setattr(rebuild_module, "TRAINING_BUDGETS", budgets)
    config = rebuild_module.job_config(Job("ssm", synthetic_category), dataset)
    assert (config.epochs, config.lr) == (9, 0.5)
    assert rebuild_module.job_config(Job("ssm", synthetic_category, {"epochs": 3}), dataset).epochs == 3
    assert rebuild_module.job_config(Job("sgsf", synthetic_category), dataset) == SGSFConfig()
