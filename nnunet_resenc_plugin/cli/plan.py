"""``nnunet-resenc plan``: plan (and optionally preprocess) a dataset for the residual-encoder U-Net."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

_PRESETS = ("S", "M", "L", "XL")
_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``plan`` options to ``parser``."""
    parser.add_argument("-d", "--dataset", type=int, required=True, help="nnU-Net dataset id, for example 4.")
    parser.add_argument("--preset", default="M", type=str.upper, choices=_PRESETS,
                        help="Network width and memory target (default: M, 8 GB).")
    parser.add_argument("--gpu-memory", type=float, default=None, metavar="GB",
                        help="Peak training memory to plan for, in GB (default: the preset's target).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="Time training steps on this device and plan for a time budget per iteration.")
    parser.add_argument("--seconds-per-iteration", type=float, default=None, metavar="S",
                        help="Time budget per training iteration in seconds (default with --device: 5).")
    parser.add_argument("-c", "--configurations", nargs="+", choices=_CONFIGURATIONS, default=None,
                        help="Configurations to time and preprocess (default: all that nnU-Net plans).")
    parser.add_argument("--plans-name", default=None,
                        help="Plans identifier (default: nnUNetPluginResEnc<PRESET>Plans).")
    parser.add_argument("--preprocess", action="store_true", help="Run nnU-Net's preprocessing after planning.")
    parser.add_argument("-np", "--num-processes", type=int, default=2,
                        help="Worker processes for fingerprint extraction and preprocessing (default: 2).")
    parser.add_argument("--norm", default=None, help="Normalisation: instance (default), batch or group.")
    parser.add_argument("--block", default=None, help="Residual block: basic (default) or bottleneck.")
    parser.add_argument("--downsampling", default=None, help="Downsampling: conv (default), max_pool or avg_pool.")
    parser.add_argument("--shortcut", default=None, help="Residual projection: avg_pool_conv (default) or conv.")
    parser.add_argument("--squeeze-excitation", action="store_true", default=None,
                        help="Add squeeze-and-excitation to every residual block.")
    parser.add_argument("--stochastic-depth", type=float, default=None, metavar="P",
                        help="Drop-path rate of the deepest block, in [0, 1) (default: 0).")
    parser.add_argument("--zero-init-residual", action="store_true", default=None,
                        help="Start every residual block as its shortcut, as nnU-Net's ResEnc presets do "
                             "(default: off, which learns sooner).")


def run(args: argparse.Namespace) -> int:
    """Plan the dataset, print the plans identifier and return 0."""
    from nnunet_resenc_plugin.planning.api import plan_experiment

    names = ("norm", "block", "downsampling", "shortcut", "squeeze_excitation", "stochastic_depth",
             "zero_init_residual")
    block_options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    identifier = plan_experiment(
        args.dataset,
        preset=args.preset,
        gpu_memory_gb=args.gpu_memory,
        device=args.device,
        seconds_per_iteration=args.seconds_per_iteration,
        configurations=args.configurations,
        plans_name=args.plans_name,
        preprocess=args.preprocess,
        num_processes=args.num_processes,
        **block_options,
    )
    print(identifier)
    return 0
