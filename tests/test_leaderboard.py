"""The results table: validation with file and line, honest pivots (n/a, no partial means), charts."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from ssad.leaderboard import (
    CATEGORY_LABELS,
    CATEGORIES,
    COLUMNS,
    RESULTS_FILE,
    display_table,
    grouped_bars,
    heatmap,
    load_leaderboard,
    measured_rows,
    results_table,
    write_measured,
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in COLUMNS} for row in rows)
    return path


REPORTED = dict(source="reported", reference="A paper, 2021")
MEASURED = dict(source="measured", resolution="128", precision="fp32", epochs="30", train_minutes="12.5", device="cpu", commit="abc", date="2026-11-24")


def test_committed_table_is_valid_and_complete():
    board = load_leaderboard(RESULTS_FILE)
    assert board.problems == []
    mvtec = results_table(board, "mvtec", "image_auroc")
    assert set(CATEGORIES["mvtec"]) <= set(mvtec.columns) and len(CATEGORIES["mvtec"]) == 15
    draem = mvtec[(mvtec["method"] == "DRAEM") & (mvtec["source"] == "reported")].iloc[0]
    assert draem["bottle"] == pytest.approx(99.2) and draem["mean"] == pytest.approx(98.0)
    oct_table = results_table(board, "oct", "image_auroc")
    ssm = oct_table[(oct_table["method"] == "SSM") & (oct_table["source"] == "reported")].iloc[0]
    assert ssm["retina-official"] == pytest.approx(98.3)


def test_malformed_and_duplicated_rows_are_reported_with_line(tmp_path):
    rows = [
        dict(method="A", dataset="mvtec", category="bottle", metric="image_auroc", value="0.9", **REPORTED),
        dict(method="A", dataset="mvtec", category="bottle", metric="image_auroc", value="0.8", **REPORTED),
        dict(method="B", dataset="mvtec", category="bottle", metric="image_auroc", value="99.0", **REPORTED),
        dict(method="C", dataset="mvtec", category="nowhere", metric="image_auroc", value="0.5", **REPORTED),
        dict(method="D", dataset="mvtec", category="bottle", metric="image_auroc", value="0.5", source="measured"),
        dict(method="E", dataset="mvtec", category="bottle", metric="image_auroc", value="0.5", source="reported"),
        dict(method="F", dataset="mvtec", category="bottle", metric="image_auroc", value="abc", **REPORTED),
    ]
    board = load_leaderboard(write_rows(tmp_path / "r.csv", rows))
    assert list(board.rows["method"]) == ["A"]
    assert board.rows.iloc[0]["value"] == 0.9
    joined = "\n".join(board.problems)
    assert "r.csv:3: duplicates line 2" in joined
    assert "r.csv:4: value 99.0 is outside [0, 1]" in joined
    assert "r.csv:5: unknown mvtec category 'nowhere'" in joined
    assert "r.csv:6: measured figure without resolution" in joined
    assert "r.csv:7: reported figure without a reference" in joined
    assert "r.csv:8: value 'abc' is not a number" in joined


def test_missing_figures_stay_missing_and_partial_means_are_not_shown(tmp_path):
    rows = [dict(method="Ours", dataset="mvtec", category="bottle", metric="image_auroc", value="0.95", **MEASURED)]
    rows += [
        dict(method="Full", dataset="mvtec", category=c, metric="image_auroc", value="0.9", **REPORTED)
        for c in CATEGORIES["mvtec"]
    ]
    board = load_leaderboard(write_rows(tmp_path / "r.csv", rows))
    table = results_table(board, "mvtec", "image_auroc")
    ours = table[table["method"] == "Ours"].iloc[0]
    assert ours["bottle"] == pytest.approx(95.0)
    assert ours["pill"] is None or math.isnan(ours["pill"])
    assert ours["mean"] is None or math.isnan(ours["mean"])
    assert table[table["method"] == "Full"].iloc[0]["mean"] == pytest.approx(90.0)
    shown = display_table(table)
    assert shown[shown["method"] == "Ours"].iloc[0]["pill"] == "n/a"
    assert "commit abc" in ours["provenance"]
    only_reported = results_table(board, "mvtec", "image_auroc", sources=("reported",))
    assert list(only_reported["method"]) == ["Full"]


def test_charts_have_one_trace_per_method_and_keep_gaps(tmp_path):
    board = load_leaderboard(RESULTS_FILE)
    bars = grouped_bars(board, "mvtec", "pixel_auroc")
    assert len(bars.data) == len(results_table(board, "mvtec", "pixel_auroc"))
    measured = {c for c in board.rows.query("source == 'measured' and dataset == 'mvtec' and metric == 'pixel_auroc'")["category"]}
    shown = [label.replace("<br>", ", ") for label in bars.data[0].x]
    assert shown == [CATEGORY_LABELS.get(c, c) for c in CATEGORIES["mvtec"] if c in measured]  # where runs compare
    assert "cable, this copy's split" in shown  # not the official test split: said on the axis
    reported = grouped_bars(board, "mvtec", "pixel_auroc", ("reported",))
    assert [label.replace("<br>", ", ") for label in reported.data[0].x] == [*(CATEGORY_LABELS.get(c, c) for c in CATEGORIES["mvtec"]), "mean"]
    heat = heatmap(board, "mvtec", "image_auroc")
    assert "n/a" in {t for row in heat.data[0].text for t in row}


def test_write_measured_replaces_only_its_own_rows(tmp_path):
    path = write_rows(tmp_path / "r.csv", [dict(method="RIAD", dataset="mvtec", category="bottle", metric="image_auroc", value="0.999", **REPORTED)])
    report = {"dataset": "mvtec", "category": "bottle", "image_auroc": 0.97, "pixel_auroc": 0.95, "pixel_ap": None, "aupro": 0.8, "image_f1_max": 0.9, "n_test": 83}
    info = {"train_seconds": 600, "device": "cpu", "commit": "abc", "date": "2026-11-24"}
    for value in (0.97, 0.98):
        write_measured(measured_rows({**report, "image_auroc": value}, info, {"size": 128, "epochs": 30}, "SSM"), path)
    board = load_leaderboard(path)
    assert board.problems == []
    ssm = board.rows[(board.rows["method"] == "SSM") & (board.rows["metric"] == "image_auroc")]
    assert list(ssm["value"]) == [0.98]
    assert len(board.rows) == 1 + 4  # RIAD kept; pixel_ap None is not written


def test_rewriting_measured_rows_keeps_their_place(tmp_path):
    path = write_rows(tmp_path / "r.csv", [])
    info = {"train_seconds": 60, "device": "cpu", "commit": "abc", "date": "2026-11-25"}
    report = {"dataset": "mvtec", "category": "bottle", "image_auroc": 0.9, "n_test": 83}
    for method, value in (("SSM", 0.9), ("SGSF", 0.8), ("SSM", 0.95)):
        write_measured(measured_rows({**report, "image_auroc": value}, info, {"size": 128, "epochs": 1}, method), path)
    rows = load_leaderboard(path).rows
    assert list(rows["method"]) == ["SSM", "SGSF"] and list(rows["value"]) == [0.95, 0.8]


def test_measured_rows_say_the_input_shape_cpu_minutes_and_each_class_and_width():
    report = {
        "method": "sgsf", "dataset": "oct", "category": "retina", "n_test": 503, "image_auroc": 0.9,
        "per_class_auroc": {"CNV": 0.95, "DME": 0.9, "DRUSEN": 0.8}, "per_width_auroc": {"512": 0.91, "768": 0.7},
    }
    info = {"train_seconds": 900.0, "train_cpu_seconds": 600.0, "device": "cpu", "commit": "abc", "date": "2026-12-02"}
    (row,) = measured_rows(report, info, {"size": 128, "input_shape": [80, 208], "epochs": 3}, "SGSF")
    assert (row["resolution"], row["train_minutes"]) == ("80x208", 10.0)
    assert row["note"] == "Kermany OCT, this split, 503 test images; per class CNV 0.950, DME 0.900, DRUSEN 0.800; per width 512 0.910, 768 0.700"
    (old,) = measured_rows({**report, "per_width_auroc": {}}, {"train_seconds": 60.0}, {"size": 128}, "SGSF")
    assert (old["resolution"], old["train_minutes"]) == ("128x128", 1.0)
    (tuned,) = measured_rows({**report, "per_class_auroc": {}, "training_note": "cutdiff tuned on X"}, info, {"size": 128}, "ST-SSAD")
    assert tuned["note"] == "Kermany OCT, this split, 503 test images; per width 512 0.910, 768 0.700; cutdiff tuned on X"
