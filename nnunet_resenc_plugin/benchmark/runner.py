"""The side-by-side benchmark: every system on every dataset, fold and seed, at the same budget.

Budget: every system trains for the same ``epochs x iterations`` with the same batch size cap, applied to all
systems alike by writing a copy of each plans file whose batch size is ``min(planned, cap)``. Without the cap,
nnU-Net's ResEnc presets plan a 3D batch of 58 for the hippocampus (the presets drop the cap of 5% of the dataset
per batch), so equal iterations would mean very unequal work. Seconds per iteration are reported so the compute
cost of each system stays visible.

Results are resumable. Each finished (dataset, system, fold, seed) cell writes ``cells/<cell>.json`` and is not
run again. An interrupted training resumes with ``--c`` from nnU-Net's latest checkpoint, which nnU-Net writes
only every 50 epochs, so a shorter cell that is interrupted trains again from the start.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from nnunet_resenc_plugin.benchmark.systems import System, get_system
from nnunet_resenc_plugin.demo.steps import NnunetFolders, PipelineStepError, run_step, train_command
from nnunet_resenc_plugin.errors import ResEncPluginError

logger = logging.getLogger(__name__)

BENCHMARK_TRAINER_FOLDER = Path(__file__).resolve().parent / "ext_trainer"
# Datasets known by name; the source is found under --data-root. Any other dataset is given by nnU-Net ID.
NAMED_DATASETS = {
    "hippocampus": ("msd", "msd_hippocampus", 4, "Hippocampus", "3d_fullres"),
    "nuclei": ("dsb2018", "dsb2018_nuclei", 5, "NucleiDSB2018", "2d"),
}
HIPPOCAMPUS_LABELS = ("background", "Anterior", "Posterior")


@dataclass(frozen=True)
class BenchmarkDataset:
    """A dataset in the benchmark: converted from a known source, or an existing nnU-Net raw dataset."""

    key: str
    dataset_id: int
    configuration: str
    source_format: str | None = None
    source: Path | None = None
    name: str | None = None


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run.

    Attributes:
        output: Folder for the nnU-Net folders, ``cells/``, ``results.csv``, ``results.md`` and the plots.
        datasets: Datasets to run.
        systems: System names (see ``SYSTEMS``).
        folds: Cross-validation folds.
        seeds: Random seeds; each seed is a full repetition.
        epochs: Epochs per training.
        iterations: Training iterations per epoch.
        batch_cap: Largest batch size of every system.
        device: ``cpu`` or ``cuda``.
        max_cases: Convert only the first N cases of a named dataset (None: all).
        num_processes: Worker processes for planning and preprocessing.
    """

    output: Path
    datasets: Sequence[BenchmarkDataset]
    systems: Sequence[str]
    folds: Sequence[int] = (0,)
    seeds: Sequence[int] = (0,)
    epochs: int = 5
    iterations: int = 20
    batch_cap: int = 2
    device: str = "cpu"
    max_cases: int | None = None
    num_processes: int = 2
    results: list[dict] = field(default_factory=list)


def resolve_dataset(spec: str, data_root: Path) -> BenchmarkDataset:
    """Turn ``hippocampus``, ``nuclei`` or a dataset ID (optionally ``ID:CONFIGURATION``) into a dataset.

    Raises:
        ResEncPluginError: If the spec is neither a known name nor an integer ID.
    """
    if spec in NAMED_DATASETS:
        source_format, folder, dataset_id, name, configuration = NAMED_DATASETS[spec]
        return BenchmarkDataset(spec, dataset_id, configuration, source_format, data_root / folder, name)
    identifier, _, configuration = spec.partition(":")
    try:
        dataset_id = int(identifier)
    except ValueError:
        raise ResEncPluginError(
            f"Unknown dataset {spec!r}: use {', '.join(NAMED_DATASETS)} or an nnU-Net dataset ID such as 27 "
            "(optionally with a configuration, 27:2d)."
        ) from None
    return BenchmarkDataset(str(dataset_id), dataset_id, configuration or "3d_fullres")


def cell_name(dataset: BenchmarkDataset, system: System, fold: int, seed: int) -> str:
    """Return the file-name stem that identifies one benchmark cell."""
    return f"{dataset.key}__{system.name}__fold{fold}__seed{seed}"


def run_benchmark(config: BenchmarkConfig) -> list[dict]:
    """Run every missing cell of the benchmark and return all cell results, finished earlier ones included.

    Raises:
        PipelineStepError: If an nnU-Net step fails; finished cells stay recorded.
    """
    from tqdm import tqdm

    output = Path(config.output).resolve()
    folders = NnunetFolders(output / "nnunet")
    folders.create()
    cells_dir = output / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    systems = [get_system(name) for name in config.systems]
    _write_settings(output, config)

    cells = [(dataset, system, fold, seed) for dataset in config.datasets for system in systems
             for fold in config.folds for seed in config.seeds]
    results = []
    prepared: set[tuple[str, str]] = set()
    for dataset, system, fold, seed in tqdm(cells, desc="Benchmark cells", unit="cell"):
        record_file = cells_dir / f"{cell_name(dataset, system, fold, seed)}.json"
        if record_file.is_file():
            logger.info("Cell %s is finished; skipping it.", record_file.stem)
            results.append(json.loads(record_file.read_text()))
            continue
        if (dataset.key, system.name) not in prepared:
            _prepare_dataset(dataset, folders, config)
            _plan_system(dataset, system, folders, config)
            prepared.add((dataset.key, system.name))
        record = _run_cell(dataset, system, fold, seed, folders, config, output)
        record_file.write_text(json.dumps(record, indent=2))
        results.append(record)

    from nnunet_resenc_plugin.benchmark.tables import write_outputs

    write_outputs(results, output)
    return results


def _write_settings(output: Path, config: BenchmarkConfig) -> None:
    settings = {key: value for key, value in asdict(config).items() if key not in ("results", "datasets")}
    settings["datasets"] = [dataset.key for dataset in config.datasets]
    settings["output"] = str(settings["output"])
    (output / "settings.json").write_text(json.dumps(settings, indent=2, default=str))


def _dataset_folder_name(dataset: BenchmarkDataset) -> str:
    if dataset.name is not None:
        return f"Dataset{dataset.dataset_id:03d}_{dataset.name}"
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise ResEncPluginError(
            f"Dataset {dataset.dataset_id} is given by ID, so the benchmark reads it from $nnUNet_raw, which is not "
            "set. Export nnUNet_raw."
        )
    matches = sorted(Path(raw).glob(f"Dataset{dataset.dataset_id:03d}_*"))
    if len(matches) != 1:
        raise ResEncPluginError(
            f"Expected one folder Dataset{dataset.dataset_id:03d}_* in {raw}, found {len(matches)}."
        )
    return matches[0].name


def _prepare_dataset(dataset: BenchmarkDataset, folders: NnunetFolders, config: BenchmarkConfig) -> None:
    """Convert a named dataset into the benchmark's raw folder, or link an existing raw dataset there."""
    folder_name = _dataset_folder_name(dataset)
    target = folders.raw / folder_name
    if target.exists():
        return
    if dataset.source_format is None:
        os.symlink(Path(os.environ["nnUNet_raw"]) / folder_name, target, target_is_directory=True)
        logger.info("Linked %s into the benchmark's raw folder", folder_name)
        return
    if dataset.source is None or not dataset.source.is_dir():
        raise ResEncPluginError(
            f"Source of dataset {dataset.key!r} not found at {dataset.source}; pass --data-root with the folder "
            "that holds msd_hippocampus/ and dsb2018_nuclei/."
        )
    if dataset.source_format == "msd":
        from nnunet_resenc_plugin.datasets.msd import convert_msd

        convert_msd(dataset.source, folders.raw, dataset.dataset_id, name=dataset.name,
                    labels=list(HIPPOCAMPUS_LABELS), channel_names=["MRI"], max_cases=config.max_cases)
    else:
        from nnunet_resenc_plugin.datasets.dsb2018 import convert_dsb2018

        convert_dsb2018(dataset.source, folders.raw, dataset.dataset_id, name=dataset.name or "NucleiDSB2018",
                        max_cases=config.max_cases)


def _bench_plans_name(system: System, config: BenchmarkConfig) -> str:
    return f"{system.plans_name}_b{config.batch_cap}"


def _plan_system(dataset: BenchmarkDataset, system: System, folders: NnunetFolders,
                 config: BenchmarkConfig) -> None:
    """Plan and preprocess a dataset for a system, then write its batch-capped plans copy."""
    folder_name = _dataset_folder_name(dataset)
    preprocessed = folders.preprocessed / folder_name
    capped_file = preprocessed / f"{_bench_plans_name(system, config)}.json"
    if capped_file.is_file():
        return
    environment = folders.environment(config.device)
    logs = Path(config.output).resolve() / "logs"
    for index, command in enumerate(system.plan_commands(dataset.dataset_id, dataset.configuration,
                                                         config.num_processes)):
        if "extract_fingerprint_entry" in command[2] and (preprocessed / "dataset_fingerprint.json").is_file():
            continue
        run_step(f"plan {system.name} on {dataset.key} ({index + 1})", command, environment,
                 logs / f"plan_{dataset.key}_{system.name}.log")

    plans = json.loads((preprocessed / f"{system.plans_name}.json").read_text())
    capped = copy.deepcopy(plans)
    capped["plans_name"] = _bench_plans_name(system, config)
    configuration = capped["configurations"][dataset.configuration]
    planned_batch = int(configuration["batch_size"])
    configuration["batch_size"] = min(planned_batch, config.batch_cap)
    capped_file.write_text(json.dumps(capped, indent=2))
    logger.info("%s on %s: batch size %d planned, %d used", system.name, dataset.key, planned_batch,
                configuration["batch_size"])


def _train_with_peak_memory(command: list[str], environment: dict[str, str], log_file: Path) -> tuple[float, int]:
    """Run a training command and return its seconds and its peak resident memory in bytes (Linux ``wait4``)."""
    logger.info("Training: %s", " ".join(command[3:]))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_file, "ab") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise PipelineStepError(f"Training failed with exit code {process.returncode}; see {log_file}.")
    # ru_maxrss is in kilobytes on Linux.
    return seconds, int(usage.ru_maxrss) * 1024


def _run_cell(dataset: BenchmarkDataset, system: System, fold: int, seed: int, folders: NnunetFolders,
              config: BenchmarkConfig, output: Path) -> dict:
    from nnunet_resenc_plugin.benchmark import metrics
    from nnunet_resenc_plugin.demo.steps import read_training_log, trained_fold_folder
    from nnunet_resenc_plugin.training.discovery import ext_trainer_value
    from nnunet_resenc_plugin_startup import merge_trainer_folder

    folder_name = _dataset_folder_name(dataset)
    plans_name = _bench_plans_name(system, config)
    # Each seed trains into its own results folder, because nnU-Net's output path has no seed in it.
    results_root = folders.root / f"nnUNet_results_seed{seed}"
    environment = folders.environment(config.device, {
        "nnUNet_results": str(results_root),
        "nnUNet_extTrainer": merge_trainer_folder(ext_trainer_value(), str(BENCHMARK_TRAINER_FOLDER)),
        "nnUNet_resenc_bench_epochs": str(config.epochs),
        "nnUNet_resenc_bench_iterations": str(config.iterations),
        "nnUNet_resenc_bench_seed": str(seed),
    }, training=True)
    fold_folder = trained_fold_folder(results_root, folder_name, system.trainer, plans_name, dataset.configuration,
                                      fold)
    resume = (fold_folder / "checkpoint_latest.pth").is_file() or (fold_folder / "checkpoint_final.pth").is_file()
    if resume:
        logger.info("Resuming %s from its last checkpoint", fold_folder)
    command = train_command(dataset.dataset_id, dataset.configuration, fold, system.trainer, plans_name,
                            config.device, resume=resume)
    train_seconds, peak_bytes = _train_with_peak_memory(
        command, environment, output / "logs" / f"train_{dataset.key}_{system.name}_fold{fold}_seed{seed}.log")

    summary = json.loads((fold_folder / "validation" / "summary.json").read_text())
    preprocessed = folders.preprocessed / folder_name
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    hd95 = metrics.hd95_per_label(preprocessed / "gt_segmentations", fold_folder / "validation", dataset_json)
    network, input_channels, patch_size, batch_size = metrics.network_from_plans(plans, dataset_json,
                                                                                 dataset.configuration)
    training_log = read_training_log(fold_folder / "checkpoint_final.pth")
    label_names = {int(value): name for name, value in dataset_json["labels"].items() if int(value) != 0}

    record = {
        "dataset": dataset.key,
        "system": system.name,
        "fold": fold,
        "seed": seed,
        "configuration": dataset.configuration,
        "plans": plans_name,
        "trainer": system.trainer,
        "epochs": config.epochs,
        "iterations_per_epoch": config.iterations,
        "batch_size": batch_size,
        "patch_size": "x".join(str(size) for size in patch_size),
        "validation_cases": len(summary["metric_per_case"]),
        "dice_mean": float(summary["foreground_mean"]["Dice"]),
        "hd95_mean": _nan_mean(list(hd95.values())),
        "seconds_per_iteration": metrics.seconds_per_iteration(training_log, config.iterations),
        "training_seconds": train_seconds,
        "peak_memory_mb": peak_bytes / 2**20 if config.device == "cpu" else float("nan"),
        "parameters": metrics.count_parameters(network),
        "gflops_per_patch": metrics.flops_per_patch(network, input_channels, patch_size) / 1e9,
    }
    for value, name in sorted(label_names.items()):
        record[f"dice_{name}"] = float(summary["mean"][str(value)]["Dice"])
        record[f"hd95_{name}"] = hd95[value]
    logger.info("Cell %s: mean Dice %.3f, HD95 %.2f", cell_name(dataset, system, fold, seed), record["dice_mean"],
                record["hd95_mean"])
    return record


def _nan_mean(values: Sequence[float]) -> float:
    finite = [value for value in values if value == value]
    return float(sum(finite) / len(finite)) if finite else float("nan")
