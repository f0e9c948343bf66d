"""``nnunet-resenc demo``: the end-to-end demo on the embedded hippocampus data."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--output", type=Path, default=Path("demo_output"),
                        help="Folder for the demo's nnU-Net folders, predictions and report/ (default: demo_output). "
                        "The demo uses its own nnU-Net folders there, whatever nnUNet_raw and friends are set to.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="Training and inference device (default: cuda when available, else cpu).")
    parser.add_argument("--epochs", type=int, choices=(1, 5, 10, 50, 100, 250), default=50,
                        help="Training epochs (default: 50).")
    parser.add_argument("--iterations", type=int, default=10,
                        help="Training iterations per epoch (default: 10).")
    parser.add_argument("--seconds-per-iteration", type=float, default=2.0, metavar="S",
                        help="Time budget per training iteration that the planner sizes patch and batch for "
                        "(default: 2.0).")


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the Dice table and return the exit code."""
    from nnunet_resenc_plugin.demo.pipeline import DemoSettings, run_demo
    from nnunet_resenc_plugin.demo.report import dice_rows, format_dice_table
    from nnunet_resenc_plugin.demo.steps import PipelineStepError
    from nnunet_resenc_plugin.errors import ResEncPluginError

    if args.iterations < 1:
        raise ResEncPluginError(f"--iterations must be at least 1, got {args.iterations}.")
    if args.seconds_per_iteration <= 0:
        raise ResEncPluginError(f"--seconds-per-iteration must be positive, got {args.seconds_per_iteration}.")
    epochs_suffix = "1epoch" if args.epochs == 1 else f"{args.epochs}epochs"
    settings = DemoSettings(
        seconds_per_iteration=args.seconds_per_iteration,
        trainer=f"nnUNetTrainerResEnc_{epochs_suffix}",
        iterations_per_epoch=args.iterations,
    )
    try:
        result = run_demo(args.output, device=args.device, settings=settings)
    except PipelineStepError as error:
        logger.error("%s", error)
        return 1

    label_names = {0: "background", 1: "Anterior", 2: "Posterior"}
    print()
    print(format_dice_table(dice_rows(result.summary, label_names), len(result.summary["metric_per_case"])))
    print()
    print(f"Report: {result.report}")
    print(f"Total time: {sum(result.step_seconds.values()):.0f} s on {result.device}")
    return 0
