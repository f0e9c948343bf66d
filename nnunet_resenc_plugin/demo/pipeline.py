"""The end-to-end demo on the embedded hippocampus data.

Steps: convert the embedded MSD subset (holding out every fifth case), plan and preprocess with the plugin
planner, train the plugin trainer through nnU-Net's ``run_training``, predict the held-out cases with nnU-Net's
predictor, evaluate them with nnU-Net's evaluator, and write a report. The demo always uses its own nnU-Net folders
inside the output folder, whatever ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` are set to, so
it never writes into a user's own nnU-Net data.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_resenc_plugin.demo.steps import (
    NnunetFolders,
    default_device,
    evaluate_predictions,
    plan_command,
    predict_command,
    run_step,
    train_command,
    trained_fold_folder,
)
from nnunet_resenc_plugin.errors import ResEncPluginError

logger = logging.getLogger(__name__)

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data" / "hippocampus"
DATASET_ID = 990
DATASET_NAME = "DemoHippocampus"
LABELS = ("background", "Anterior", "Posterior")
CONFIGURATION = "3d_fullres"
FOLD = 0
# The demo writes this file into its output folder; a later run only deletes folders that carry it.
MARKER_FILE = ".nnunet-resenc-demo"


@dataclass(frozen=True)
class DemoSettings:
    """Knobs of the demo. The defaults keep a CPU run at about 15 minutes on two cores.

    Attributes:
        preset: Plugin planner preset.
        seconds_per_iteration: Time budget per training iteration for the planner's compute-aware mode.
        trainer: Plugin trainer; its name sets the number of epochs.
        iterations_per_epoch: Training iterations per epoch.
        val_iterations_per_epoch: Validation iterations per epoch.
        held_out_every: Every n-th case (in sorted order, starting with the first) is held out for testing.
        num_processes: Worker processes for preprocessing, prediction and evaluation.
    """

    preset: str = "M"
    seconds_per_iteration: float = 2.0
    trainer: str = "nnUNetTrainerResEnc_50epochs"
    iterations_per_epoch: int = 10
    val_iterations_per_epoch: int = 5
    held_out_every: int = 5
    num_processes: int = 2


@dataclass
class DemoResult:
    """Outcome of a demo run."""

    output: Path
    device: str
    plans_name: str
    held_out: list[str]
    summary: dict
    step_seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


def held_out_cases(source: Path = DEMO_DATA, every: int = 5) -> list[str]:
    """Return the identifiers of the held-out cases: every ``every``-th labelled case in sorted order."""
    names = sorted(path.name[: -len(".nii.gz")] for path in (source / "labelsTr").glob("*.nii.gz"))
    return names[::every]


def prepare_output(output: Path) -> None:
    """Create the output folder, or clear the results of an earlier demo run in it.

    Raises:
        ResEncPluginError: If ``output`` is a non-empty folder that an earlier demo run did not create.
    """
    if output.exists() and any(output.iterdir()) and not (output / MARKER_FILE).is_file():
        raise ResEncPluginError(
            f"Output folder {output} is not empty and was not created by the demo; choose an empty or new folder."
        )
    for child in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions", "report", "logs"):
        shutil.rmtree(output / child, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER_FILE).write_text("Created by nnunet-resenc demo; the next demo run replaces this folder.\n")


def run_demo(output: str | Path, device: str | None = None, settings: DemoSettings = DemoSettings()) -> DemoResult:
    """Run the whole demo and return its results.

    Args:
        output: Output folder; the nnU-Net folders, predictions and ``report/`` are written into it.
        device: ``cpu`` or ``cuda``; None picks CUDA when PyTorch finds a device.
        settings: Schedule and planner settings.

    Raises:
        PipelineStepError: If an nnU-Net step fails.
        ResEncPluginError: On an unusable output folder or device.
    """
    from nnunet_resenc_plugin.datasets.msd import convert_msd

    output = Path(output).resolve()
    device = device or default_device()
    if device not in ("cpu", "cuda"):
        raise ResEncPluginError(f"Unknown device {device!r}; use cpu or cuda.")
    prepare_output(output)
    folders = NnunetFolders(output)
    folders.create()
    logs = output / "logs"
    seconds: dict[str, float] = {}
    logger.info("Demo output folder: %s (device %s)", output, device)

    start = time.perf_counter()
    held_out = held_out_cases(DEMO_DATA, settings.held_out_every)
    dataset_folder = convert_msd(DEMO_DATA, folders.raw, DATASET_ID, name=DATASET_NAME, labels=list(LABELS),
                                 channel_names=["MRI"], test_cases=held_out)
    seconds["convert"] = time.perf_counter() - start
    logger.info("Converted %d training and %d held-out cases", len(list((dataset_folder / "labelsTr").iterdir())),
                len(held_out))

    plans_name = f"nnUNetPluginResEnc{settings.preset}Plans"
    environment = folders.environment(device)
    seconds["plan and preprocess"] = run_step(
        "plan and preprocess",
        plan_command(DATASET_ID, settings.preset, CONFIGURATION, device, settings.seconds_per_iteration,
                     plans_name=plans_name, num_processes=settings.num_processes),
        environment, logs / "plan.log",
    )

    train_environment = folders.environment(device, {
        "nnUNet_resenc_iterations_per_epoch": str(settings.iterations_per_epoch),
        "nnUNet_resenc_val_iterations_per_epoch": str(settings.val_iterations_per_epoch),
    }, training=True)
    seconds["train"] = run_step(
        "train",
        train_command(DATASET_ID, CONFIGURATION, FOLD, settings.trainer, plans_name, device),
        train_environment, logs / "train.log",
    )

    predictions = output / "predictions"
    seconds["predict"] = run_step(
        "predict",
        predict_command(dataset_folder / "imagesTs", predictions, DATASET_ID, CONFIGURATION, FOLD,
                        settings.trainer, plans_name, device, num_processes=1),
        environment, logs / "predict.log",
    )

    start = time.perf_counter()
    summary = evaluate_predictions(dataset_folder / "labelsTs", predictions, dataset_folder / "dataset.json",
                                   num_processes=1)
    seconds["evaluate"] = time.perf_counter() - start
    logger.info("Evaluated %d held-out cases", len(summary["metric_per_case"]))

    result = DemoResult(output, device, plans_name, held_out, summary, seconds)
    from nnunet_resenc_plugin.demo.report import write_report

    fold_folder = trained_fold_folder(folders.results, dataset_folder.name, settings.trainer, plans_name, CONFIGURATION,
                                      FOLD)
    plans = json.loads((folders.preprocessed / dataset_folder.name / f"{plans_name}.json").read_text())
    result.report = write_report(result, settings, dataset_folder, fold_folder, plans)
    return result
