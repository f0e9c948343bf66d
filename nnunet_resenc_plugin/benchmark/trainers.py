"""Trainers with an equal, configurable schedule for the benchmark: stock nnU-Net and the plugin.

Both read the same environment variables when they are constructed, so every system in a benchmark trains for
the same number of epochs and iterations, with the same seed:

- ``nnUNet_resenc_bench_epochs``: number of epochs (required).
- ``nnUNet_resenc_bench_iterations``: training iterations per epoch (required).
- ``nnUNet_resenc_bench_val_iterations``: validation iterations per epoch (default 1; they only feed nnU-Net's
  pseudo Dice, which the benchmark does not report).
- ``nnUNet_resenc_bench_seed``: seed of Python's, NumPy's and PyTorch's random generators (default 0).

The benchmark lists the ``ext_trainer`` folder next to this module in ``nnUNet_extTrainer``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_resenc_plugin.errors import ResEncPluginError
from nnunet_resenc_plugin.training.trainers import nnUNetTrainerResEnc

EPOCHS_ENV = "nnUNet_resenc_bench_epochs"
ITERATIONS_ENV = "nnUNet_resenc_bench_iterations"
VAL_ITERATIONS_ENV = "nnUNet_resenc_bench_val_iterations"
SEED_ENV = "nnUNet_resenc_bench_seed"

__all__ = ["nnUNetTrainerBenchmark", "nnUNetTrainerResEncBenchmark", "nnUNetTrainerResEncBenchmarkFP32"]


def _read_int(name: str, default: int | None, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise ResEncPluginError(f"{name} is not set; the benchmark trainers need it (an integer >= {minimum}).")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ResEncPluginError(f"{name}={raw!r} is invalid: expected an integer >= {minimum}.")
    return value


def _apply_schedule(trainer: nnUNetTrainer) -> None:
    trainer.num_epochs = _read_int(EPOCHS_ENV, None, 1)
    trainer.num_iterations_per_epoch = _read_int(ITERATIONS_ENV, None, 1)
    trainer.num_val_iterations_per_epoch = _read_int(VAL_ITERATIONS_ENV, 1, 1)
    seed = _read_int(SEED_ENV, 0, 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer.print_to_log_file(
        f"Benchmark schedule: {trainer.num_epochs} epochs x {trainer.num_iterations_per_epoch} iterations, "
        f"{trainer.num_val_iterations_per_epoch} validation iterations per epoch, seed {seed}.",
        also_print_to_console=True,
    )


class nnUNetTrainerBenchmark(nnUNetTrainer):
    """Stock ``nnUNetTrainer`` with the benchmark's schedule and seed."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _apply_schedule(self)


class nnUNetTrainerResEncBenchmark(nnUNetTrainerResEnc):
    """The plugin's ``nnUNetTrainerResEnc`` with the benchmark's schedule and seed."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _apply_schedule(self)


class nnUNetTrainerResEncBenchmarkFP32(nnUNetTrainerResEncBenchmark):
    """The plugin's benchmark trainer with CPU bfloat16 autocast off, to compare float32 at the same budget.

    A trainer of its own (rather than an environment variable) gives the float32 run its own results folder.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.cpu_bf16:
            self.cpu_bf16 = False
            self.print_to_log_file("CPU bfloat16 autocast turned off: this benchmark system trains in float32.",
                                   also_print_to_console=True)
