"""The leaderboard rebuild: trains once, then reuses current weights and reports; stale weights retrain."""

import csv
import shutil

import pytest

import ssad.rebuild as rebuild_module
from ssad.leaderboard import COLUMNS
from ssad.provenance import _code_only
from ssad.rebuild import Job, Places, rebuild, summary_table

TINY = {"size": 32, "epochs": 1, "batch_size": 4, "base_width": 4, "refine_block": 4, "refine_iterations": 2}


def test_code_fingerprint_ignores_docstrings_and_comments_only():
    base = "def f(x):\n    '''Doc.'''\n    return x + 1  # add\n"
    assert _code_only(base) == _code_only("def f(x):\n    '''Other words.'''\n    # note\n    return x + 1\n")
    assert _code_only(base) != _code_only("def f(x):\n    return x + 2\n")


@pytest.fixture
def places(tmp_path, monkeypatch):
    results = tmp_path / "results.csv"
    with open(results, "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=COLUMNS).writeheader()
    # Weights trained in a dirty working tree can never be shown current; pin the fingerprint so that the
    # reuse logic (config and checksum) is what this test checks.
    monkeypatch.setattr(rebuild_module, "code_fingerprint", lambda paths, commit=None: "same code")
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
