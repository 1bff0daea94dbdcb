"""The leaderboard: a tidy table of measured and reported results, validated on load, pivoted and charted.

``leaderboard/results.csv`` holds one figure per row. A ``measured`` row comes from ``python -m ssad
evaluate`` with its provenance; a ``reported`` row comes from a paper, with its reference. Nothing is
ever filled in: a missing figure is shown as n/a.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ssad.catalog import DATASETS as CATALOG
from ssad.settings import RESULTS_FILE


COLUMNS = [
    "method", "dataset", "category", "metric", "value", "source", "reference",
    "resolution", "precision", "epochs", "train_minutes", "device", "commit", "date", "note",
]
METRICS = {
    "image_auroc": "Image AUROC",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "aupro": "AUPRO (FPR 0.3)",
    "image_f1_max": "Image F1-max",
}
DATASETS = {name: info.label for name, info in CATALOG.items()}
CATEGORIES = {name: list(info.categories) for name, info in CATALOG.items()}
CATEGORY_LABELS = {category: label for info in CATALOG.values() for category, label in info.category_labels.items()}
MEAN = "mean"
MEASURED_FIELDS = ("resolution", "precision", "epochs", "train_minutes", "device", "commit", "date")
SOURCES = ("measured", "reported")


@dataclass
class Leaderboard:
    """Valid rows as a DataFrame, and one message per rejected row (``file:line: why``)."""

    rows: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def _row_problem(row: dict[str, str]) -> str | None:
    """Why a row cannot be used, or None when it is valid."""
    if row.get("dataset") not in DATASETS:
        return f"unknown dataset {row.get('dataset')!r}"
    if row.get("category") not in [*CATEGORIES[row["dataset"]], MEAN]:
        return f"unknown {row['dataset']} category {row.get('category')!r}"
    if row.get("metric") not in METRICS:
        return f"unknown metric {row.get('metric')!r}"
    if not row.get("method"):
        return "no method"
    try:
        value = float(row.get("value", ""))
    except ValueError:
        return f"value {row.get('value')!r} is not a number"
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        return f"value {value} is outside [0, 1] (fractions, not percent)"
    source = row.get("source")
    if source not in SOURCES:
        return f"source {source!r} is neither 'measured' nor 'reported'"
    if source == "reported" and not row.get("reference"):
        return "reported figure without a reference"
    if source == "measured":
        missing = [name for name in MEASURED_FIELDS if not row.get(name)]
        if missing:
            return f"measured figure without {', '.join(missing)}"
    return None


def load_leaderboard(path: Path = RESULTS_FILE) -> Leaderboard:
    """Read and validate the results table; malformed or duplicated rows are reported and left out."""
    problems: list[str] = []
    valid: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], int] = {}
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as error:
        return Leaderboard(pd.DataFrame(columns=COLUMNS), [f"{path}: cannot read ({error.strerror})"])
    with handle:
        reader = csv.DictReader(handle)
        missing_columns = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing_columns:
            return Leaderboard(pd.DataFrame(columns=COLUMNS), [f"{path}:1: missing columns {', '.join(missing_columns)}"])
        for line, row in enumerate(reader, start=2):
            if None in row or any(value is None for value in row.values()):
                problems.append(f"{path.name}:{line}: wrong number of fields")
                continue
            row = {key: (value or "").strip() for key, value in row.items()}
            problem = _row_problem(row)
            if problem:
                problems.append(f"{path.name}:{line}: {problem}")
                continue
            key = tuple(row[c] for c in ("method", "dataset", "category", "metric", "source"))
            if key in seen:
                problems.append(f"{path.name}:{line}: duplicates line {seen[key]} ({', '.join(key)})")
                continue
            seen[key] = line
            valid.append({**row, "value": float(row["value"])})
    return Leaderboard(pd.DataFrame(valid, columns=COLUMNS), problems)


def _filtered(board: Leaderboard, dataset: str, metric: str, sources: tuple[str, ...]) -> pd.DataFrame:
    rows = board.rows
    return rows[(rows["dataset"] == dataset) & (rows["metric"] == metric) & (rows["source"].isin(sources))]


def results_table(
    board: Leaderboard, dataset: str, metric: str, sources: tuple[str, ...] = SOURCES
) -> pd.DataFrame:
    """Methods (one row per method and source) by categories, in percent; missing figures are None.

    The mean column is the paper's own mean for reported rows that give one, otherwise the mean over
    all categories when every category has a figure, otherwise None: a partial mean is never shown.
    """
    rows = _filtered(board, dataset, metric, sources)
    categories = CATEGORIES[dataset]
    records = []
    for (method, source), group in rows.groupby(["method", "source"], sort=False):
        values = dict(zip(group["category"], group["value"] * 100))
        per_category = [values.get(c) for c in categories]
        if MEAN in values:
            mean = values[MEAN]
        elif dataset == "mvtec" and all(v is not None for v in per_category):
            mean = sum(per_category) / len(per_category)
        else:
            mean = None
        provenance = group.iloc[0]
        where = provenance["reference"] if source == "reported" else (
            f"{provenance['device']}, {provenance['resolution']} px, {provenance['epochs']} epochs, "
            f"commit {provenance['commit']}, {provenance['date']}"
        )
        records.append({"method": method, "source": source, **dict(zip(categories, per_category)), MEAN: mean, "provenance": where})
    table = pd.DataFrame(records, columns=["method", "source", *categories, MEAN, "provenance"])
    if dataset != "mvtec":
        table = table.drop(columns=[MEAN])
    return table.sort_values(["source", "method"], kind="stable").reset_index(drop=True)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text for the app: one decimal, ``n/a`` for missing figures, readable column names."""
    shown = table.copy()
    for column in shown.columns:
        if column not in ("method", "source", "provenance"):
            shown[column] = [f"{v:.1f}" if isinstance(v, float) and not math.isnan(v) else "n/a" for v in shown[column]]
    return shown.rename(columns=CATEGORY_LABELS)


METRIC_RANGE = {"image_auroc": (50.0, 100.0), "pixel_auroc": (50.0, 100.0), "pixel_ap": (0.0, 100.0),
                "aupro": (0.0, 100.0), "image_f1_max": (0.0, 100.0)}
"""Fixed colour scale of the heat map per metric (percent): the same colour means the same figure in every view."""
REPORTED_STYLE = dict(opacity=0.55, marker_pattern_shape="/")
"""Reported bars: paler and hatched, so that they never pass for measured ones."""


def method_colours(board: Leaderboard) -> dict[str, str]:
    """One colour per method of the whole board (a method keeps its colour in every view), none repeated."""
    import plotly.express as px

    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    methods = sorted(set(board.rows["method"]))
    return {method: palette[i % len(palette)] for i, method in enumerate(methods)}


def _empty_figure(title: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(
        title=title, height=260, xaxis_visible=False, yaxis_visible=False, margin=dict(l=20, r=20, t=50, b=20),
        annotations=[dict(text="No figures for this selection: choose another metric, dataset or source.",
                          showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font_size=14)],
    )
    return figure


def _chart_data(board: Leaderboard, dataset: str, metric: str, sources: tuple[str, ...]) -> tuple[str, pd.DataFrame, list[str]]:
    """A chart's title, its rows (method, source, one column per category) and its category columns."""
    table = results_table(board, dataset, metric, sources)
    categories = [c for c in table.columns if c not in ("method", "source", "provenance")]
    return f"{METRICS[metric]} (%), {DATASETS[dataset]}", table, categories


def grouped_bars(board: Leaderboard, dataset: str, metric: str, sources: tuple[str, ...] = SOURCES):
    """Plotly grouped bars: one group per category, one bar per method and source; colour = method, hatch = reported.

    With measured rows in the selection, only the categories they cover are drawn: there the reported figures
    are compared with this run's.
    """
    import plotly.graph_objects as go

    title, table, categories = _chart_data(board, dataset, metric, sources)
    if table.empty:
        return _empty_figure(title)
    measured = table[table["source"] == "measured"]
    if not measured.empty:  # fifteen groups of sixteen bars cannot be read on a phone; the heat map shows them all
        categories = [c for c in categories if measured[c].notna().any()]
        title += "<br><sup>categories with a measured figure</sup>"
    colours = method_colours(board)
    figure = go.Figure()
    for _, row in table.iterrows():
        style = REPORTED_STYLE if row["source"] == "reported" else {}
        figure.add_bar(
            name=f"{row['method']} ({row['source']})",
            x=[CATEGORY_LABELS.get(c, c).replace(", ", "<br>") for c in categories],  # a short line each: room for the bars
            y=[row[c] for c in categories],
            marker_color=colours[row["method"]],
            opacity=style.get("opacity", 1.0),
            marker_pattern_shape=style.get("marker_pattern_shape", ""),
            hovertemplate="%{x}: %{y:.1f}<extra>" + f"{row['method']} ({row['source']})" + "</extra>",
        )
    figure.update_layout(
        barmode="group",
        title=title,
        yaxis_title=f"{METRICS[metric]} (%)",
        legend=dict(title="method (source)", orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0),
        margin=dict(l=40, r=20, t=70, b=40),
        height=360 + 20 * len(table),  # room for a one-column legend on a phone
    )
    return figure


def heatmap(board: Leaderboard, dataset: str, metric: str, sources: tuple[str, ...] = SOURCES):
    """Plotly heat map of methods by categories on the metric's fixed scale; empty cells stay empty (n/a)."""
    import plotly.graph_objects as go

    title, table, categories = _chart_data(board, dataset, metric, sources)
    if table.empty:
        return _empty_figure(title)
    z = table[categories].astype(float).values
    text = [[f"{v:.1f}" if not math.isnan(v) else "n/a" for v in row] for row in z]
    low, high = METRIC_RANGE[metric]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=[CATEGORY_LABELS.get(c, c) for c in categories],
            y=[f"{m} ({s})" for m, s in zip(table["method"], table["source"])],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            zmin=low,
            zmax=high,
            colorbar=dict(title="%"),
            hoverongaps=False,
        )
    )
    figure.update_layout(
        title=title,
        margin=dict(l=40, r=20, t=50, b=40),
        height=max(300, 40 * len(table) + 120),
    )
    return figure


def measured_rows(report: dict[str, Any], info: dict[str, Any], config: dict[str, Any], method_name: str) -> list[dict[str, Any]]:
    """Leaderboard rows for one ``evaluate`` report, with the provenance of the weights that produced it."""
    rows = []
    for metric in METRICS:
        value = report.get(metric)
        if value is None:
            continue
        rows.append(
            {
                "method": method_name,
                "dataset": report["dataset"],
                "category": report["category"],
                "metric": metric,
                "value": f"{value:.4f}",
                "source": "measured",
                "reference": "",
                "resolution": _resolution(config),
                "precision": _precision_note(info.get("train_precision", "fp32"), report.get("precision", "fp32")),
                "epochs": config.get("epochs"),
                "train_minutes": round(info.get("train_cpu_seconds", info.get("train_seconds", 0)) / 60, 1),
                "device": info.get("device"),
                "commit": info.get("commit"),
                "date": info.get("date"),
                "note": _note(report),
            }
        )
    return rows


def _resolution(config: dict[str, Any]) -> str:
    """The network input as ``HxW`` (models saved before ``input_shape`` were square at ``size``)."""
    height, width = config.get("input_shape") or (config.get("size"),) * 2
    return f"{height}x{width}"


def _note(report: dict[str, Any]) -> str:
    """What the figure is measured on, with the image AUROC of each anomaly class and scan width where there are several."""
    parts = [f"{CATEGORY_LABELS.get(report['category'], DATASETS[report['dataset']])}, {report['n_test']} test images"]
    for title, key in (("per class", "per_class_auroc"), ("per width", "per_width_auroc")):
        groups = report.get(key) or {}
        if len(groups) > 1:  # evaluate reports widths only for sets of a few scan widths
            parts.append(f"{title} " + ", ".join(f"{name} {value:.3f}" for name, value in groups.items() if value is not None))
    if report.get("training_note"):
        parts.append(report["training_note"])
    return "; ".join(parts)


def _precision_note(trained: str, evaluated: str) -> str:
    """``fp32`` when training and evaluation ran at one precision, else ``bf16 train, fp32 eval``."""
    return trained if trained == evaluated else f"{trained} train, {evaluated} eval"


def write_measured(rows: list[dict[str, Any]], path: Path = RESULTS_FILE) -> None:
    """Add measured rows; a measured row for the same method, dataset, category and metric is replaced where it stands."""
    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return (row["method"], row["dataset"], row["category"], row["metric"])

    new = {key(row): {c: row.get(c, "") for c in COLUMNS} for row in rows}
    with open(path, newline="", encoding="utf-8") as handle:
        existing = list(csv.DictReader(handle))
    updated = [new.pop(key(row)) if row["source"] == "measured" and key(row) in new else row for row in existing]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(updated)
        writer.writerows(new.values())
