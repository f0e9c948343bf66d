"""Environment variables that the plugin trainers read, with their parsing.

nnU-Net's commands take no extra options for custom trainers, so the plugin trainers read these variables
when they are constructed. Every variable is optional.

- ``nnUNet_resenc_iterations_per_epoch``: training iterations per epoch (nnU-Net's default is 250).
- ``nnUNet_resenc_val_iterations_per_epoch``: validation iterations per epoch (nnU-Net's default is 50).
- ``nnUNet_resenc_cpu_bf16``: ``auto`` (default) uses bfloat16 autocast on CPUs with bf16 instructions,
  ``0`` trains in float32, ``1`` forces bfloat16 autocast on the CPU.
- ``nnUNet_resenc_pretrained_weights``: checkpoint to start a new training from (plugin or stock ResEnc).
- ``nnUNet_resenc_pretrained_encoder_only``: ``1`` loads only the encoder from that checkpoint.
"""

from __future__ import annotations

import os
from typing import Mapping

from nnunet_resenc_plugin.errors import ResEncPluginError

ITERATIONS_ENV = "nnUNet_resenc_iterations_per_epoch"
VAL_ITERATIONS_ENV = "nnUNet_resenc_val_iterations_per_epoch"
CPU_BF16_ENV = "nnUNet_resenc_cpu_bf16"
PRETRAINED_ENV = "nnUNet_resenc_pretrained_weights"
ENCODER_ONLY_ENV = "nnUNet_resenc_pretrained_encoder_only"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def read_positive_int(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    """Read a positive integer from the environment variable ``name``.

    Args:
        name: Name of the variable.
        environ: Mapping to read from; defaults to ``os.environ``.

    Returns:
        The integer, or None when the variable is unset or empty.

    Raises:
        ResEncPluginError: If the value is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ResEncPluginError(f"{name}={raw!r} is invalid: expected a positive integer such as 10. "
                                f"Set a positive integer or unset {name} to keep nnU-Net's default.")
    return value


def read_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Read a boolean flag (``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off``); unset is False.

    Raises:
        ResEncPluginError: If the value is none of those words.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip().lower()
    if not raw or raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ResEncPluginError(f"{name}={raw!r} is invalid: expected 1 or 0 (also true/false, yes/no, on/off).")


def read_cpu_bf16_mode(environ: Mapping[str, str] | None = None) -> str:
    """Read ``nnUNet_resenc_cpu_bf16`` and return ``"auto"``, ``"on"`` or ``"off"``.

    Raises:
        ResEncPluginError: If the value is not ``auto`` or a boolean word.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(CPU_BF16_ENV, "").strip().lower()
    if not raw or raw == "auto":
        return "auto"
    if raw in _TRUE:
        return "on"
    if raw in _FALSE:
        return "off"
    raise ResEncPluginError(f"{CPU_BF16_ENV}={raw!r} is invalid: expected auto, 1 or 0.")


def read_path(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a file path from ``name``; returns None when unset or empty."""
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip()
    return raw or None
