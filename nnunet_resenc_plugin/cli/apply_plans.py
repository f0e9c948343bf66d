"""``nnunet-resenc apply-plans``: apply a plans file to another dataset."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``apply-plans`` options to ``parser``."""
    parser.add_argument("plans_file", help="Source plans JSON, for example plans/ResEncM_3d.json.")
    parser.add_argument("-d", "--dataset", type=int, required=True, help="Target nnU-Net dataset id.")
    parser.add_argument("--plans-name", default=None,
                        help="Identifier of the new plans (default: the source's plans_name).")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="Accept a target with other channels or labels (train from scratch only).")
    parser.add_argument("--preprocess", action="store_true", help="Run nnU-Net's preprocessing afterwards.")
    parser.add_argument("-np", "--num-processes", type=int, default=2,
                        help="Worker processes for fingerprint extraction and preprocessing (default: 2).")


def run(args: argparse.Namespace) -> int:
    """Write the adapted plans, optionally preprocess, print the plans identifier and return 0."""
    from nnunet_resenc_plugin.planning.api import preprocess_configurations
    from nnunet_resenc_plugin.planning.apply_plans import apply_plans

    identifier = apply_plans(args.plans_file, args.dataset, args.plans_name, args.allow_mismatch,
                             args.num_processes)
    if args.preprocess:
        preprocess_configurations(args.dataset, identifier, ["2d", "3d_fullres", "3d_lowres"], args.num_processes)
    print(identifier)
    return 0
