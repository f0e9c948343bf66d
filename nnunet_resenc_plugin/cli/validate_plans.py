"""``nnunet-resenc validate-plans``: check a plans file before training."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``validate-plans`` options to ``parser``."""
    parser.add_argument("plans_file", help="Path of an nnU-Net plans JSON file.")
    parser.add_argument("-c", "--configuration", default=None,
                        help="Configuration to check (default: every configuration in the file).")


def run(args: argparse.Namespace) -> int:
    """Validate the plans file; return 0 when valid (errors raise PlansValidationError, exit code 2)."""
    from nnunet_resenc_plugin.errors import PlansValidationError
    from nnunet_resenc_plugin.planning.validation import validate_plans

    try:
        with open(args.plans_file, encoding="utf-8") as handle:
            plans = json.load(handle)
    except FileNotFoundError as error:
        raise PlansValidationError(f"Plans file {args.plans_file!r} not found.") from error
    except json.JSONDecodeError as error:
        raise PlansValidationError(f"Plans file {args.plans_file!r} is not valid JSON: {error}.") from error
    validate_plans(plans, args.configuration)
    checked = args.configuration or ", ".join(plans["configurations"])
    print(f"{args.plans_file}: valid ({checked})")
    return 0
