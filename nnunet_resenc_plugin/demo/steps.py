"""nnU-Net pipeline steps run as child processes, shared by the demo and the benchmark.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` once, when ``nnunetv2.paths`` is
first imported. Running planning, training and prediction in child processes with their own environment lets one
Python process drive several sets of nnU-Net folders, and keeps a crash in nnU-Net from taking the caller down.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class PipelineStepError(RuntimeError):
    """An nnU-Net step that ran in a child process and failed."""


@dataclass(frozen=True)
class NnunetFolders:
    """The three nnU-Net data folders under one root folder."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def create(self) -> None:
        """Create the three folders."""
        for folder in (self.raw, self.preprocessed, self.results):
            folder.mkdir(parents=True, exist_ok=True)

    def environment(self, device: str, extra: Mapping[str, str] | None = None,
                    training: bool = False) -> dict[str, str]:
        """Return a copy of ``os.environ`` that points nnU-Net at these folders.

        Args:
            device: ``cpu`` or ``cuda``.
            extra: Further variables to set, for example the plugin trainers' iteration counts.
            training: Whether the environment is for training. Training on the CPU gets ``nnUNet_n_proc_DA=0``,
                which runs data augmentation in the training process: faster than worker processes when only a
                few cores are available. Planning must not see that value, because nnU-Net 2.8.1 then calls
                ``torch.set_num_threads(0)`` and fails.
        """
        from nnunet_resenc_plugin.training.discovery import ext_trainer_value

        environment = dict(os.environ)
        environment["nnUNet_raw"] = str(self.raw)
        environment["nnUNet_preprocessed"] = str(self.preprocessed)
        environment["nnUNet_results"] = str(self.results)
        environment["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
        # torch.compile takes minutes to warm up, which short schedules do not win back.
        environment.setdefault("nnUNet_compile", "false")
        if training and device == "cpu":
            environment["nnUNet_n_proc_DA"] = "0"
        elif not training and environment.get("nnUNet_n_proc_DA", "").strip() == "0":
            del environment["nnUNet_n_proc_DA"]
        if extra:
            environment.update(extra)
        return environment


def python_entry(module: str, function: str) -> list[str]:
    """Return the start of a command line that calls ``module.function()`` in a new interpreter.

    The function reads its options from ``sys.argv`` as nnU-Net's console scripts do, so the options follow.
    """
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code]


def default_device() -> str:
    """Return ``cuda`` when PyTorch finds a CUDA device, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_step(name: str, command: Sequence[str], environment: Mapping[str, str], log_file: Path | None = None) -> float:
    """Run one pipeline step in a child process and return its duration in seconds.

    The child's output goes to the console (nnU-Net's own progress output) and, with ``log_file``, also to that
    file.

    Args:
        name: Step name for log messages.
        command: Command line.
        environment: Environment of the child process.
        log_file: Optional file that receives a copy of the child's output.

    Raises:
        PipelineStepError: If the child exits with a non-zero code.
    """
    logger.info("Step '%s' started", name)
    logger.debug("Command: %s", " ".join(command))
    start = time.perf_counter()
    if log_file is None:
        completed = subprocess.run(list(command), env=dict(environment), check=False)
        return_code = completed.returncode
    else:
        return_code = _run_with_copy(command, environment, log_file)
    seconds = time.perf_counter() - start
    if return_code != 0:
        where = f"; its output is in {log_file}" if log_file else ""
        raise PipelineStepError(f"Step '{name}' failed with exit code {return_code} after {seconds:.0f} s{where}.")
    logger.info("Step '%s' finished in %.1f s", name, seconds)
    return seconds


def _run_with_copy(command: Sequence[str], environment: Mapping[str, str], log_file: Path) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as copy:
        process = subprocess.Popen(list(command), env=dict(environment), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            copy.write(chunk)
        return process.wait()


def plan_command(dataset_id: int, preset: str, configuration: str, device: str | None,
                 seconds_per_iteration: float | None, plans_name: str | None = None,
                 block_options: Mapping[str, object] | None = None, num_processes: int = 2) -> list[str]:
    """Return the ``nnunet-resenc plan --preprocess`` command line for one configuration."""
    command = python_entry("nnunet_resenc_plugin.cli", "main") + [
        "plan", "-d", str(dataset_id), "--preset", preset, "-c", configuration, "--preprocess",
        "-np", str(num_processes),
    ]
    if device is not None:
        command += ["--device", device]
    if seconds_per_iteration is not None:
        command += ["--seconds-per-iteration", str(seconds_per_iteration)]
    if plans_name is not None:
        command += ["--plans-name", plans_name]
    for option, value in (block_options or {}).items():
        flag = "--" + option.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value not in (None, False):
            command += [flag, str(value)]
    return command


def train_command(dataset_id: int, configuration: str, fold: int | str, trainer: str, plans_name: str,
                  device: str, resume: bool = False) -> list[str]:
    """Return nnU-Net's training command line (``nnUNetv2_train``)."""
    command = python_entry("nnunetv2.run.run_training", "run_training_entry") + [
        str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", plans_name, "-device", device,
    ]
    if resume:
        command.append("--c")
    return command


def predict_command(input_folder: Path, output_folder: Path, dataset_id: int, configuration: str, fold: int | str,
                    trainer: str, plans_name: str, device: str, num_processes: int = 1) -> list[str]:
    """Return nnU-Net's prediction command line (``nnUNetv2_predict``) for one trained fold."""
    return python_entry("nnunetv2.inference.predict_from_raw_data", "predict_entry_point") + [
        "-i", str(input_folder), "-o", str(output_folder), "-d", str(dataset_id), "-c", configuration,
        "-f", str(fold), "-tr", trainer, "-p", plans_name, "-device", device,
        "-npp", str(num_processes), "-nps", str(num_processes),
    ]


def trained_fold_folder(results: Path, dataset_name: str, trainer: str, plans_name: str, configuration: str,
                        fold: int | str) -> Path:
    """Return nnU-Net's output folder of one trained fold under the results folder ``results``."""
    return Path(results) / dataset_name / f"{trainer}__{plans_name}__{configuration}" / f"fold_{fold}"


def evaluate_predictions(reference_folder: Path, prediction_folder: Path, dataset_json: Path,
                         num_processes: int = 1) -> dict:
    """Evaluate predictions against references with nnU-Net's evaluator and return its summary.

    Writes ``summary.json`` into ``prediction_folder``, as ``nnUNetv2_evaluate_folder`` does.

    Args:
        reference_folder: Folder with the reference label files.
        prediction_folder: Folder with predicted label files of the same names.
        dataset_json: The dataset's ``dataset.json``, for labels, file ending and image reader.
        num_processes: Worker processes of the evaluator.
    """
    import json

    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    dataset = json.loads(Path(dataset_json).read_text())
    file_ending = dataset["file_ending"]
    example = next(iter(sorted(Path(reference_folder).glob(f"*{file_ending}"))), None)
    if example is None:
        raise PipelineStepError(f"No reference files ending in {file_ending} found in {reference_folder}.")
    reader = determine_reader_writer_from_dataset_json(dataset, str(example))()
    labels = sorted(int(value) for value in dataset["labels"].values() if int(value) != 0)
    return compute_metrics_on_folder(
        str(reference_folder), str(prediction_folder), str(Path(prediction_folder) / "summary.json"), reader,
        file_ending, labels, num_processes=num_processes, chill=False,
    )


def read_training_log(checkpoint: Path) -> dict[str, list]:
    """Return the per-epoch values that nnU-Net stores in a checkpoint (losses, pseudo Dice, timestamps)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    log = state.get("logging", {})
    return {key: list(values) for key, values in log.items() if isinstance(values, list)}
