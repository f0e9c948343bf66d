"""Benchmark outputs: ``results.csv`` (one row per cell), ``results.md`` (mean and spread per system) and plots."""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# Columns of the Markdown table: result key, header, number format.
SUMMARY_COLUMNS = (
    ("dice_mean", "mean Dice", "{:.3f}"),
    ("hd95_mean", "mean HD95", "{:.2f}"),
    ("seconds_per_iteration", "s / iteration", "{:.2f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.0f}"),
    ("parameters", "parameters (M)", "{:.2f}"),
    ("gflops_per_patch", "GFLOPs / patch", "{:.1f}"),
)


def write_outputs(results: Sequence[Mapping], output: Path) -> None:
    """Write ``results.csv``, ``results.md``, ``dice.png`` and ``dice_vs_time.png`` into ``output``."""
    if not results:
        logger.warning("No benchmark results to write.")
        return
    output = Path(output)
    write_csv(results, output / "results.csv")
    (output / "results.md").write_text(markdown_table(results) + "\n")
    plot_dice(results, output / "dice.png")
    plot_dice_versus_time(results, output / "dice_vs_time.png")
    logger.info("Wrote results.csv, results.md, dice.png and dice_vs_time.png to %s", output)


def write_csv(results: Sequence[Mapping], path: Path) -> None:
    """Write one row per cell; the columns are the union of all cells' keys, in first-seen order."""
    columns: list[str] = []
    for record in results:
        columns.extend(key for key in record if key not in columns)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in results:
            writer.writerow(record)


def group_cells(results: Sequence[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    """Group cells by (dataset, system), keeping the order in which they first appear."""
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for record in results:
        groups[(record["dataset"], record["system"])].append(record)
    return dict(groups)


def _mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    finite = np.asarray([value for value in values if value is not None and math.isfinite(float(value))], float)
    if finite.size == 0:
        return float("nan"), float("nan")
    spread = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
    return float(np.mean(finite)), spread


def markdown_table(results: Sequence[Mapping]) -> str:
    """Return one Markdown table row per (dataset, system): mean over folds and seeds, ± sample standard deviation.

    The label columns (``dice_<label>``) of every dataset follow the summary columns.
    """
    label_columns: list[str] = []
    for record in results:
        label_columns.extend(key for key in record if key.startswith("dice_") and key != "dice_mean"
                             and key not in label_columns)
    header = ["dataset", "system", "cells", *[title for _, title, _ in SUMMARY_COLUMNS],
              *[f"Dice {key[len('dice_'):]}" for key in label_columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for (dataset, system), cells in group_cells(results).items():
        row = [dataset, system, str(len(cells))]
        for key, _, number_format in SUMMARY_COLUMNS:
            values = [float(cell[key]) / (1e6 if key == "parameters" else 1.0) for cell in cells]
            row.append(_format(values, number_format))
        for key in label_columns:
            values = [float(cell[key]) for cell in cells if key in cell]
            row.append(_format(values, "{:.3f}") if values else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _format(values: Sequence[float], number_format: str) -> str:
    mean, spread = _mean_and_spread(values)
    if math.isnan(mean):
        return "n/a"
    text = number_format.format(mean)
    if not math.isnan(spread):
        text += " ± " + number_format.format(spread)
    return text


def plot_dice(results: Sequence[Mapping], path: Path) -> None:
    """Plot mean Dice per system for every dataset: bars for the mean, dots for single folds and seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_cells(results)
    datasets = list(dict.fromkeys(dataset for dataset, _ in groups))
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        systems = [system for key, system in groups if key == dataset]
        for position, system in enumerate(systems):
            values = [float(cell["dice_mean"]) for cell in groups[(dataset, system)]]
            axis.bar(position, np.mean(values), color="lightsteelblue", edgecolor="black")
            axis.scatter([position] * len(values), values, color="black", s=14, zorder=3)
        axis.set_xticks(range(len(systems)), systems, rotation=30, ha="right")
        axis.set_ylim(0, 1)
        axis.set_ylabel("mean foreground Dice")
        axis.set_title(dataset)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_dice_versus_time(results: Sequence[Mapping], path: Path) -> None:
    """Plot mean Dice against seconds per training iteration, one marker per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    markers = "osD^v<>p*"
    for index, ((dataset, system), cells) in enumerate(group_cells(results).items()):
        axis.scatter([float(cell["seconds_per_iteration"]) for cell in cells],
                     [float(cell["dice_mean"]) for cell in cells],
                     marker=markers[index % len(markers)], label=f"{dataset}: {system}")
    axis.set_xlabel("seconds per training iteration")
    axis.set_ylabel("mean foreground Dice")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
