"""The ``nnunet-resenc`` command line.

Each subcommand lives in its own module of this package with two functions, ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import torch and nnunetv2 inside ``run`` only, so that ``--help`` and
argument errors stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from nnunet_resenc_plugin import __version__
from nnunet_resenc_plugin.errors import ResEncPluginError

# Subcommand name, module in this package, one-line help.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("plan", "plan", "Plan (and optionally preprocess) a dataset for the residual-encoder U-Net."),
    ("validate-plans", "validate_plans", "Check a plans file before training."),
    ("apply-plans", "apply_plans", "Apply a plans file to another dataset."),
    ("convert", "convert", "Convert an MSD or Data Science Bowl dataset into nnU-Net's raw layout."),
    ("convert-checkpoint", "convert_checkpoint", "Convert a stock nnU-Net ResEnc checkpoint for the plugin."),
    ("demo", "demo", "Run the end-to-end demo on the embedded hippocampus data."),
    ("benchmark", "benchmark", "Compare stock nnU-Net and the plugin side by side."),
    ("env", "env", "Print the nnUNet_extTrainer setting that makes nnU-Net find the plugin trainers."),
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one subparser per available subcommand."""
    parser = argparse.ArgumentParser(
        prog="nnunet-resenc",
        description="Residual-encoder U-Net plugin for nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module_name}":
                raise
            continue
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.run(args) or 0)
    except ResEncPluginError as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
