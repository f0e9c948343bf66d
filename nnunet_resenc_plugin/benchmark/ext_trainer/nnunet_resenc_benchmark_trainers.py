"""Shim that nnU-Net imports, as a top-level module, from the folders listed in ``nnUNet_extTrainer``.

The folder holds only this re-export, so the classes keep their real module path for pickling and lookup.
"""

from nnunet_resenc_plugin.benchmark.trainers import (  # noqa: F401 - re-exported for nnU-Net's lookup
    nnUNetTrainerBenchmark,
    nnUNetTrainerResEncBenchmark,
    nnUNetTrainerResEncBenchmarkFP32,
)
