"""The demo report: a Dice table, a Markdown summary and PNG figures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from nnunet_resenc_plugin.demo.pipeline import DemoResult, DemoSettings

logger = logging.getLogger(__name__)

# Colours of labels 1, 2, ... in the overlay figure (RGBA).
LABEL_COLOURS = ((0.95, 0.30, 0.20, 0.55), (0.20, 0.60, 0.95, 0.55), (0.30, 0.85, 0.30, 0.55))


def per_case_dice(summary: Mapping, label: int) -> np.ndarray:
    """Return the Dice of ``label`` for every case of an nnU-Net evaluation summary.

    ``compute_metrics_on_folder`` keys the metrics by integer label, while the summary it writes to JSON keys them
    by string, so both forms are accepted.
    """
    values = []
    for case in summary["metric_per_case"]:
        metrics = case["metrics"]
        values.append(metrics[label]["Dice"] if label in metrics else metrics[str(label)]["Dice"])
    return np.asarray(values, dtype=float)


def dice_rows(summary: Mapping, label_names: Mapping[int, str]) -> list[tuple[str, float, float, float]]:
    """Return ``(label name, mean, min, max)`` Dice rows over the cases of an nnU-Net evaluation summary.

    The last row is the mean over the foreground labels, as nnU-Net's ``foreground_mean``.
    """
    rows = []
    for value, name in sorted(label_names.items()):
        if value == 0:
            continue
        per_case = per_case_dice(summary, value)
        rows.append((name, float(np.nanmean(per_case)), float(np.nanmin(per_case)), float(np.nanmax(per_case))))
    means = np.asarray([row[1] for row in rows])
    rows.append(("mean (foreground)", float(np.mean(means)), float("nan"), float("nan")))
    return rows


def format_dice_table(rows: Sequence[tuple[str, float, float, float]], num_cases: int) -> str:
    """Format Dice rows as a Markdown table, which also reads well on a console."""
    lines = [
        f"| label | mean Dice ({num_cases} held-out cases) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, mean, low, high in rows:
        low_text = "" if np.isnan(low) else f"{low:.3f}"
        high_text = "" if np.isnan(high) else f"{high:.3f}"
        lines.append(f"| {name} | {mean:.3f} | {low_text} | {high_text} |")
    return "\n".join(lines)


def plot_training_curve(log: Mapping[str, Sequence[float]], path: Path) -> None:
    """Plot nnU-Net's per-epoch training and validation loss and pseudo Dice into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(log.get("train_losses", [])) + 1)
    loss_axis.plot(epochs, log.get("train_losses", []), "o-", color="tab:blue", label="training loss")
    if len(log.get("val_losses", [])) == len(epochs):
        loss_axis.plot(epochs, log["val_losses"], "o-", color="tab:red", label="validation loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss (Dice + cross-entropy)")
    dice_axis = loss_axis.twinx()
    if len(log.get("mean_fg_dice", [])) == len(epochs):
        dice_axis.plot(epochs, log["mean_fg_dice"], "s--", color="tab:green", label="pseudo Dice")
    if len(log.get("ema_fg_dice", [])) == len(epochs):
        dice_axis.plot(epochs, log["ema_fg_dice"], "-", color="tab:olive", label="pseudo Dice (EMA)")
    dice_axis.set_ylabel("pseudo Dice on validation patches")
    dice_axis.set_ylim(0, 1)
    handles = loss_axis.get_legend_handles_labels()[0] + dice_axis.get_legend_handles_labels()[0]
    # The legend goes below the plot, where it can cover neither the curves nor the title.
    loss_axis.set_title("Training curve")
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_dice_per_label(summary: Mapping, label_names: Mapping[int, str], path: Path) -> None:
    """Plot the Dice of every held-out case per label, with the mean as a bar, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    foreground = [(value, name) for value, name in sorted(label_names.items()) if value != 0]
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(foreground), 4))
    rng = np.random.default_rng(0)
    for position, (value, name) in enumerate(foreground):
        per_case = per_case_dice(summary, value)
        axis.bar(position, np.nanmean(per_case), color="lightsteelblue", edgecolor="black")
        jitter = rng.uniform(-0.15, 0.15, size=per_case.size)
        axis.scatter(position + jitter, per_case, color="black", s=12, zorder=3)
    axis.set_xticks(range(len(foreground)), [name for _, name in foreground])
    axis.set_ylim(0, 1)
    axis.set_ylabel("Dice")
    axis.set_title("Dice per label (bar: mean, dots: cases)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_overlay(image_file: Path, reference_file: Path, prediction_file: Path, path: Path) -> int:
    """Plot the slice with the most reference foreground: image, reference and prediction overlays.

    Returns:
        The index of the plotted slice along the first array axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.colors import ListedColormap

    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file))).astype(float)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_file)))
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_file)))
    slice_index = int(np.argmax((reference > 0).reshape(reference.shape[0], -1).sum(axis=1)))
    colours = ListedColormap([(0, 0, 0, 0), *LABEL_COLOURS])

    figure, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    panels = (("image", None), ("reference", reference), ("prediction", prediction))
    for axis, (title, labels) in zip(axes, panels):
        axis.imshow(image[slice_index], cmap="gray")
        if labels is not None:
            axis.imshow(labels[slice_index], cmap=colours, vmin=0, vmax=len(LABEL_COLOURS), interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle(f"{prediction_file.name}, slice {slice_index}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return slice_index


def write_report(result: "DemoResult", settings: "DemoSettings", dataset_folder: Path, fold_folder: Path,
                 plans: Mapping) -> Path:
    """Write ``report/summary.md`` and its figures into the demo output folder and return the summary path."""
    import json

    from nnunet_resenc_plugin.demo.steps import read_training_log

    report = result.output / "report"
    report.mkdir(parents=True, exist_ok=True)
    dataset = json.loads((dataset_folder / "dataset.json").read_text())
    label_names = {int(value): name for name, value in dataset["labels"].items()}

    rows = dice_rows(result.summary, label_names)
    table = format_dice_table(rows, len(result.summary["metric_per_case"]))
    plot_dice_per_label(result.summary, label_names, report / "dice_per_label.png")

    figures = ["dice_per_label.png"]
    checkpoint = fold_folder / "checkpoint_final.pth"
    if checkpoint.is_file():
        plot_training_curve(read_training_log(checkpoint), report / "training_curve.png")
        figures.insert(0, "training_curve.png")
    else:
        logger.warning("No final checkpoint in %s; the report has no training curve.", fold_folder)

    case = result.held_out[0]
    plot_overlay(dataset_folder / "imagesTs" / f"{case}_0000.nii.gz", dataset_folder / "labelsTs" / f"{case}.nii.gz",
                 result.output / "predictions" / f"{case}.nii.gz", report / "overlay.png")
    figures.append("overlay.png")

    configuration = plans["configurations"]["3d_fullres"]
    lines = [
        "# nnU-Net residual-encoder plugin demo",
        "",
        f"- Data: {len(result.held_out)} held-out and "
        f"{dataset['numTraining']} training cases of the embedded MSD hippocampus subset (CC BY-SA 4.0).",
        f"- Device: {result.device}.",
        f"- Plans: `{result.plans_name}`, 3d_fullres, patch size {configuration.get('patch_size')}, "
        f"batch size {configuration.get('batch_size')}.",
        f"- Trainer: `{settings.trainer}` with {settings.iterations_per_epoch} training and "
        f"{settings.val_iterations_per_epoch} validation iterations per epoch, fold 0.",
        f"- Held-out cases: {', '.join(result.held_out)}.",
        "",
        "## Dice on the held-out cases (nnU-Net evaluator)",
        "",
        table,
        "",
        "## Time per step",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {step} | {seconds:.1f} |" for step, seconds in result.step_seconds.items()],
        f"| total | {sum(result.step_seconds.values()):.1f} |",
        "",
        "## Figures",
        "",
        *[f"![{name[:-4].replace('_', ' ')}]({name})" for name in figures],
        "",
    ]
    summary_file = report / "summary.md"
    summary_file.write_text("\n".join(lines))
    logger.info("Wrote the report to %s", summary_file)
    return summary_file
