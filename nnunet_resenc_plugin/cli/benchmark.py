"""``nnunet-resenc benchmark``: stock nnU-Net and the plugin side by side at an equal budget."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Kept here so that parsing arguments does not import nnU-Net; tests/test_benchmark.py checks it against SYSTEMS.
SYSTEM_NAMES = ("stock_default", "stock_resenc_m", "plugin_S", "plugin_M", "plugin_L", "plugin_M_bottleneck",
                "plugin_M_se", "plugin_M_zero_init", "plugin_M_fp32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``benchmark`` options to ``parser``."""
    parser.add_argument("--datasets", nargs="+", default=["hippocampus", "nuclei"], metavar="DATASET",
                        help="hippocampus (3D), nuclei (2D) or an nnU-Net dataset ID in $nnUNet_raw, optionally "
                        "with a configuration as ID:2d (default: hippocampus nuclei).")
    parser.add_argument("--systems", nargs="+", choices=SYSTEM_NAMES,
                        default=["stock_default", "stock_resenc_m", "plugin_M"],
                        help="Systems to compare (default: stock_default stock_resenc_m plugin_M).")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"),
                        help="Folder with msd_hippocampus/ and dsb2018_nuclei/ (default: ../shared/data).")
    parser.add_argument("--output", type=Path, default=Path("benchmark_output"),
                        help="Output folder; rerunning with the same folder skips finished cells "
                        "(default: benchmark_output).")
    parser.add_argument("--folds", nargs="+", type=int, default=[0], help="Cross-validation folds (default: 0).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="Random seeds (default: 0).")
    parser.add_argument("--epochs", type=int, default=5, help="Epochs per training, every system (default: 5).")
    parser.add_argument("--iterations", type=int, default=20,
                        help="Training iterations per epoch, every system (default: 20).")
    parser.add_argument("--batch-cap", type=int, default=2,
                        help="Largest batch size, applied to every system alike (default: 2).")
    parser.add_argument("--cases", type=int, default=None, metavar="N",
                        help="Use only the first N cases of hippocampus and nuclei (default: all).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="Training device (default: cuda when available, else cpu).")
    parser.add_argument("-np", "--num-processes", type=int, default=2,
                        help="Worker processes for planning and preprocessing (default: 2).")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the summary table and return the exit code."""
    from nnunet_resenc_plugin.benchmark.runner import BenchmarkConfig, resolve_dataset, run_benchmark
    from nnunet_resenc_plugin.benchmark.tables import markdown_table
    from nnunet_resenc_plugin.demo.steps import PipelineStepError, default_device
    from nnunet_resenc_plugin.errors import ResEncPluginError

    for name in ("epochs", "iterations", "batch_cap", "num_processes"):
        if getattr(args, name) < 1:
            raise ResEncPluginError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    data_root = args.data_root.resolve()
    config = BenchmarkConfig(
        output=args.output,
        datasets=[resolve_dataset(spec, data_root) for spec in args.datasets],
        systems=args.systems,
        folds=args.folds,
        seeds=args.seeds,
        epochs=args.epochs,
        iterations=args.iterations,
        batch_cap=args.batch_cap,
        device=args.device or default_device(),
        max_cases=args.cases,
        num_processes=args.num_processes,
    )
    try:
        results = run_benchmark(config)
    except PipelineStepError as error:
        logger.error("%s Rerun the same command to resume.", error)
        return 1
    print(markdown_table(results))
    print(f"\nResults: {args.output.resolve() / 'results.csv'}")
    return 0
