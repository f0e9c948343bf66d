"""Shim that nnU-Net imports, as a top-level module, from the folders listed in ``nnUNet_extTrainer``.

This folder is not a Python package on purpose: nnU-Net imports every module it finds here under a top-level
name, so the folder holds only this re-export. The classes keep their real ``__module__``
(``nnunet_resenc_plugin.training.trainers``), so checkpoints pickle and inference finds them again by name.
"""

from nnunet_resenc_plugin.training.trainers import (  # noqa: F401 - re-exported for nnU-Net's lookup
    nnUNetTrainerResEnc,
    nnUNetTrainerResEnc_1epoch,
    nnUNetTrainerResEnc_5epochs,
    nnUNetTrainerResEnc_10epochs,
    nnUNetTrainerResEnc_50epochs,
    nnUNetTrainerResEnc_100epochs,
    nnUNetTrainerResEnc_250epochs,
)
