"""Time plugin training steps on the CPU in float32 and under bfloat16 autocast.

Each step is what ``nnUNetTrainerResEnc.train_step`` does on the CPU: forward pass (under bfloat16 autocast or
not), nnU-Net's Dice + cross-entropy loss with deep supervision in float32, backward pass, gradient clipping
and an SGD step. Inputs are random batches of the given patch size.

The default network is the plugin preset M as planned for the MSD hippocampus (3D, 4 stages, 32 to 256 features,
1/3/4/6 residual blocks, patch 40x56x40). ``--plans`` and ``-c`` take the network from a plans file instead.

Usage:
    python scripts/benchmark_precision.py [--batch-size 7] [--iterations 3] [--plans PLANS.json -c 3d_fullres]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_resenc_plugin.training.precision import cpu_autocast, cpu_has_native_bf16, to_float32

logger = logging.getLogger("benchmark_precision")

HIPPOCAMPUS_M = {
    "network_class_name": "nnunet_resenc_plugin.networks.resenc_unet.ResEncUNet",
    "arch_kwargs": {
        "n_stages": 4, "features_per_stage": [32, 64, 128, 256], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 3, 4, 6], "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}
HIPPOCAMPUS_PATCH = [40, 56, 40]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, help="Plans file to take the network and patch size from.")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="Configuration in --plans.")
    parser.add_argument("--batch-size", type=int, default=7, help="Samples per step (default 7).")
    parser.add_argument("--iterations", type=int, default=3, help="Timed steps per precision (default 3).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps per precision first (default 1).")
    parser.add_argument("--num-classes", type=int, default=3, help="Output classes including background.")
    parser.add_argument("--json", type=Path, help="Also write the results to this JSON file.")
    return parser.parse_args()


def load_architecture(args: argparse.Namespace) -> tuple[dict, list[int]]:
    if args.plans is None:
        return HIPPOCAMPUS_M, HIPPOCAMPUS_PATCH
    plans = json.loads(args.plans.read_text())
    config = plans["configurations"][args.configuration]
    while "architecture" not in config or "patch_size" not in config:
        parent = plans["configurations"][config["inherits_from"]]
        config = {**parent, **config, "inherits_from": parent.get("inherits_from")}
    return config["architecture"], config["patch_size"]


def time_steps(architecture: dict, patch: list[int], args: argparse.Namespace, bf16: bool) -> list[float]:
    """Return the wall time of each timed training step, in seconds."""
    torch.manual_seed(0)
    network = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                     architecture["_kw_requires_import"], 1, args.num_classes,
                                     deep_supervision=True)
    strides = np.vstack(architecture["arch_kwargs"]["strides"])
    scales = [list(s) for s in 1 / np.cumprod(strides, axis=0)][:-1]
    weights = np.array([1 / 2**i for i in range(len(scales))])
    weights[-1] = 0
    loss = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                       weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss),
        weights / weights.sum())
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    data = torch.randn(args.batch_size, 1, *patch)
    target = [torch.randint(0, args.num_classes, (args.batch_size, 1, *[round(p * s) for p, s in zip(patch, scale)]))
              .float() for scale in scales]

    times = []
    for index in range(args.warmup + args.iterations):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with cpu_autocast(bf16):
            output = network(data)
        value = loss(to_float32(output), target)
        value.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    architecture, patch = load_architecture(args)
    logger.info("CPU has native bfloat16: %s; torch threads: %d", cpu_has_native_bf16(), torch.get_num_threads())
    results = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        times = time_steps(architecture, patch, args, bf16)
        results[name] = {"median_s": statistics.median(times), "times_s": times}
        print(f"{name}: median {statistics.median(times):.2f} s per step of batch {args.batch_size} x "
              f"{'x'.join(map(str, patch))} ({len(times)} steps)")
    print(f"bf16 speed-up: {results['fp32']['median_s'] / results['bf16']['median_s']:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "patch_size": patch, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
