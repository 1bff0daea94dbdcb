"""Label-free model selection: the set-aside split, the forged copies, the criterion, the ranking and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from ssad.cli import main
from ssad.data import open_dataset
from ssad.errors import SsadError
from ssad.methods import method_class
from ssad.selection import candidate_grid, forge_copies, forgery_auroc, select, set_aside


def test_candidate_grid_is_the_product_in_order():
    assert candidate_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    with pytest.raises(SsadError):
        candidate_grid({"a": []})


def test_set_aside_is_disjoint_seeded_and_leaves_the_test_split_alone(synthetic_category):
    dataset = open_dataset(synthetic_category)
    rest, aside = set_aside(dataset, 0.25, seed=3)
    assert len(aside.train) == round(0.25 * len(dataset.train))
    assert not {s.path for s in rest.train} & {s.path for s in aside.train}
    assert {s.path for s in rest.train} | {s.path for s in aside.train} == {s.path for s in dataset.train}
    assert rest.test == dataset.test and aside.test == ()
    assert set_aside(dataset, 0.25, seed=3)[1].train == aside.train
    assert set_aside(dataset, 0.25, seed=4)[1].train != aside.train
    with pytest.raises(SsadError, match="too few"):
        set_aside(dataset, 0.01, seed=0)


def test_forged_copies_change_each_normal_somewhere_and_are_seeded():
    normals = torch.rand(3, 3, 32, 32) * 0.2 + 0.4
    normals[:, :, 8:24, 8:24] = 0.9  # a bright object on a plain background: the salient region
    forged = forge_copies(normals, copies=2, seed=0)
    assert forged.shape == (6, 3, 32, 32)
    changed = (forged - normals.repeat(2, 1, 1, 1)).abs().amax(dim=1) > 1e-6
    assert changed.flatten(1).any(dim=1).all()
    assert not changed.flatten(1).all(dim=1).any()  # a forged region, not a new image
    assert torch.equal(forge_copies(normals, 2, seed=0), forged)


class _ScoreByBrightness:
    """Stands in for a trained method: its score is the image's mean brightness."""

    device = torch.device("cpu")
    networks = torch.nn.Module()

    def infer(self, image, with_frames=False):
        from ssad.methods.base import Inference

        return Inference(score=float(image.mean()), anomaly_map=image.mean(dim=0))


def test_forgery_auroc_measures_how_the_scores_separate_forgeries():
    normals = torch.full((4, 3, 8, 8), 0.2)
    brighter = torch.full((4, 3, 8, 8), 0.8)
    assert forgery_auroc(_ScoreByBrightness(), normals, brighter) == 1.0
    assert forgery_auroc(_ScoreByBrightness(), brighter, normals) == 0.0


def test_select_ranks_every_candidate_and_refuses_sgsf(synthetic_category):
    dataset = open_dataset(synthetic_category)
    base = tiny_config(method_class("st-ssad"))
    report = select("st-ssad", dataset, base, {"score_stages": [(3,), (2, 3)]}, share=0.25, copies=2)
    assert [c["overrides"] for c in report["candidates"]] == [{"score_stages": (3,)}, {"score_stages": (2, 3)}]
    assert all(0.0 <= c["forgery_auroc"] <= 1.0 for c in report["candidates"])
    best = max(report["candidates"], key=lambda c: c["forgery_auroc"])
    assert report["chosen"] == best["overrides"]
    assert report["set_aside"] == 6
    assert report["device"].startswith("cpu") and "commit" in report
    with pytest.raises(SsadError, match="circular"):
        select("sgsf", dataset, tiny_config(method_class("sgsf")), {"epochs": [1]})
    with pytest.raises(SsadError, match="not ST-SSAD config fields"):
        select("st-ssad", dataset, base, {"depth": [1]})


def test_select_command_prints_the_ranking_and_rejects_bad_grids(synthetic_category, tmp_path, capsys):
    out = tmp_path / "select.json"
    code = main(
        [
            "select", "--method", "ssm", "--data", str(synthetic_category), "--grid", "refine_ratio=[0.8, 0.5]",
            "--set", "size=32", "--set", "epochs=1", "--set", "base_width=4", "--set", "refine_block=4",
            "--share", "0.25", "--copies", "1", "--json", str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [c["overrides"]["refine_ratio"] for c in report["candidates"]] == [0.8, 0.5]
    assert report["base"]["size"] == 32 and report["base"]["epochs"] == 1
    capsys.readouterr()
    assert main(["select", "--method", "ssm", "--data", str(synthetic_category), "--grid", "refine_ratio=0.8"]) == 2
    assert "non-empty JSON list" in capsys.readouterr().err
    assert main(["select", "--method", "ssm", "--data", str(synthetic_category), "--grid", "nothing=[1]"]) == 2


@pytest.fixture(scope="module")
def tiny_ssm(synthetic_category, tmp_path_factory):
    cls = method_class("ssm")
    torch.manual_seed(0)
    return cls(tiny_config(cls)).fit(open_dataset(synthetic_category)).save(tmp_path_factory.mktemp("w") / "ssm")


def test_scoring_settings_are_ranked_without_retraining(tiny_ssm, synthetic_category):
    from ssad.selection import select_scoring

    model = method_class("ssm").load(tiny_ssm)
    weights = {name: t.clone() for name, t in model.networks.state_dict().items()}
    report = select_scoring(model, open_dataset(synthetic_category), {"refine_ratio": [0.8, 0.5]}, copies=2)
    assert [c["overrides"] for c in report["candidates"]] == [{"refine_ratio": 0.8}, {"refine_ratio": 0.5}]
    for candidate in report["candidates"]:
        assert 0 <= candidate["forgery_auroc"] <= 1 and 0 <= candidate["forgery_pixel_auroc"] <= 1
        assert candidate["criterion"] == pytest.approx((candidate["forgery_auroc"] + candidate["forgery_pixel_auroc"]) / 2, abs=1e-4)
    best = max(report["candidates"], key=lambda c: c["criterion"])
    assert report["chosen"] == best["overrides"] and report["held_out"] == model.calibration.n_images
    assert model.config.refine_ratio == 0.8  # candidates are copies
    assert all(torch.equal(weights[name], t) for name, t in model.networks.state_dict().items())
    with pytest.raises(SsadError, match="not scoring settings of SSM: epochs"):
        select_scoring(model, open_dataset(synthetic_category), {"epochs": [1, 2]})


def test_select_on_a_trained_model_from_the_command_line(tiny_ssm, synthetic_category, capsys):
    argv = ["select", "--method", "ssm", "--weights", str(tiny_ssm), "--data", str(synthetic_category), "--grid", "refine_iterations=[2, 1]"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["overrides"]["refine_iterations"] for c in report["candidates"]] == [2, 1]
    assert main(["select", "--method", "ssm", "--grid", "refine_ratio=[0.8]"]) == 2
