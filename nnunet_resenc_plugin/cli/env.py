"""``nnunet-resenc env``: print the nnUNet_extTrainer setting that makes nnU-Net find the plugin trainers.

Installing the plugin sets the variable automatically at every Python start. Use this command where that
hook does not run, for example ``eval "$(nnunet-resenc env)"`` in a job script that builds its environment
before starting Python.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``nnunet-resenc env`` to ``parser``."""
    parser.add_argument(
        "--check", action="store_true",
        help="Also import the trainers the way nnU-Net does and report where nnUNetTrainerResEnc was found.")


def run(args: argparse.Namespace) -> int:
    """Print the ``export`` line; with ``--check``, look the trainer up through nnU-Net and report it."""
    from nnunet_resenc_plugin.training.discovery import export_line, ext_trainer_value

    print(export_line())
    if not args.check:
        return 0
    os.environ["nnUNet_extTrainer"] = ext_trainer_value()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    # nnU-Net prints its search to stdout; send that to stderr so stdout stays valid shell code.
    with contextlib.redirect_stdout(sys.stderr):
        trainer = recursive_find_trainer_class_by_name("nnUNetTrainerResEnc")
    print(f"# nnU-Net finds nnUNetTrainerResEnc as {trainer.__module__}.{trainer.__qualname__}")
    return 0
