"""Where nnU-Net finds the plugin trainers, and the ``nnUNet_extTrainer`` value that points there.

The installed ``nnunet_resenc_plugin.pth`` extends ``nnUNet_extTrainer`` at every interpreter start (see
``nnunet_resenc_plugin_startup``). This module computes the same value for ``nnunet-resenc env``, for shells
or job schedulers that start Python with site-packages hooks disabled (``python -S``) or with a clean
environment built before Python starts.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from nnunet_resenc_plugin_startup import ENV_VAR, merge_trainer_folder

# Name of the shim module inside the trainer folder, which nnU-Net imports as a top-level module.
SHIM_MODULE = "nnunet_resenc_plugin_trainers"


def trainer_folder() -> Path:
    """Return the folder to list in ``nnUNet_extTrainer``: it contains only the shim module."""
    return Path(__file__).resolve().parent / "ext_trainer"


def ext_trainer_value(current: str | None = None) -> str:
    """Return ``nnUNet_extTrainer`` extended with the plugin's trainer folder.

    Args:
        current: Present value of the variable; defaults to the value in ``os.environ``.

    Returns:
        The user's folders in their order, followed by the plugin folder unless already listed.
    """
    if current is None:
        current = os.environ.get(ENV_VAR)
    return merge_trainer_folder(current, str(trainer_folder()))


def export_line(current: str | None = None) -> str:
    """Return a POSIX shell ``export`` statement that sets ``nnUNet_extTrainer`` for the plugin."""
    return f"export {ENV_VAR}={shlex.quote(ext_trainer_value(current))}"
