"""Interpreter-start hook that lets stock nnU-Net commands find the plugin trainers.

nnU-Net v2 (2.8.0 and later) looks for trainers outside its own package only in the folders listed in the
``nnUNet_extTrainer`` environment variable, separated by ``os.pathsep``. The file ``nnunet_resenc_plugin.pth``,
which installation places in site-packages, calls :func:`register_trainer_folder` every time Python starts, so
``nnUNetv2_train`` and ``nnUNetv2_predict`` see the plugin's trainer folder without any setup.

This module is imported at every interpreter start. It therefore imports only the standard library, never
imports the plugin package itself (it locates the package with ``importlib.util.find_spec``) and never raises.
"""

from __future__ import annotations

import importlib.util
import os
from typing import MutableMapping

ENV_VAR = "nnUNet_extTrainer"
# Set this variable to 1 to keep the hook from changing nnUNet_extTrainer.
DISABLE_ENV_VAR = "nnUNet_resenc_disable_discovery"
PACKAGE = "nnunet_resenc_plugin"
# Folder inside the package that contains the shim module. It is deliberately not a Python package, so nnU-Net
# imports only the shim under a top-level name and never the plugin's real modules.
TRAINER_FOLDER_PARTS = ("training", "ext_trainer")


def trainer_folder() -> str | None:
    """Locate the plugin's trainer folder without importing the plugin.

    Returns:
        The absolute path of the folder, or None when the plugin package or the folder is missing.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = os.path.join(os.path.abspath(location), *TRAINER_FOLDER_PARTS)
        if os.path.isdir(folder):
            return folder
    return None


def merge_trainer_folder(current: str | None, folder: str) -> str:
    """Append ``folder`` to an ``nnUNet_extTrainer`` value unless the value already lists it.

    Args:
        current: The present value of the variable, or None when it is unset.
        folder: The folder to add.

    Returns:
        The new value. Folders the user already lists keep their order and come first.
    """
    entries = [entry for entry in (current or "").split(os.pathsep) if entry.strip()]
    expected = os.path.normcase(os.path.realpath(folder))
    for entry in entries:
        if os.path.normcase(os.path.realpath(entry)) == expected:
            return os.pathsep.join(entries)
    return os.pathsep.join([*entries, folder])


def register_trainer_folder(environ: MutableMapping[str, str] | None = None) -> None:
    """Add the plugin's trainer folder to ``nnUNet_extTrainer`` in ``environ`` (default: ``os.environ``).

    Child processes inherit the change. The function does nothing when ``nnUNet_resenc_disable_discovery`` is
    ``1`` or when the plugin is not installed, and it swallows every error, because an exception here would
    print a traceback at the start of every Python process.
    """
    environ = os.environ if environ is None else environ
    try:
        if environ.get(DISABLE_ENV_VAR, "").strip().lower() in ("1", "true", "yes"):
            return
        folder = trainer_folder()
        if folder is None:
            return
        environ[ENV_VAR] = merge_trainer_folder(environ.get(ENV_VAR), folder)
    except Exception:  # noqa: BLE001 - must never break interpreter start
        return
