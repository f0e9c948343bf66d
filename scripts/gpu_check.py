"""Train a few iterations of a 3D and a 2D plugin plan on a CUDA GPU and compare peak memory with the estimate.

For each configuration the script builds the plugin network from the plans, runs training steps on random
batches of the planned patch and batch size with nnU-Net's loss (Dice + cross-entropy, deep supervision),
float16 autocast, a gradient scaler and torch.compile, as nnU-Net trains on CUDA. It prints iterations per
second and the measured peak memory next to the planner's memory estimate, and stops after five minutes at
the latest.

Without ``--plans`` it converts the embedded hippocampus demo data into a temporary nnU-Net raw folder and
plans it with the plugin planner (``2d`` and ``3d_fullres``). Without a CUDA device it prints a message and
exits with status 0; ``--device cpu`` runs the same steps on the CPU (bfloat16 autocast, no compile) to check
the script itself.

Usage:
    python scripts/gpu_check.py [--plans PLANS.json --dataset-json dataset.json] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("gpu_check")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "nnunet_resenc_plugin" / "demo_data" / "hippocampus"
CONFIGURATIONS = ("3d_fullres", "2d")
DATASET_ID = 990
# Wall-clock limit of the whole script, in seconds.
TIME_LIMIT = 300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, help="Plans file to check (default: plan the demo data).")
    parser.add_argument("--dataset-json", type=Path, help="dataset.json belonging to --plans.")
    parser.add_argument("--preset", default="M", help="Planner preset when planning the demo data (default M).")
    parser.add_argument("--iterations", type=int, default=20, help="Timed iterations per configuration.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed iterations first (compile happens here).")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default) or cpu for a check of the script without a GPU.")
    parser.add_argument("--no-compile", action="store_true", help="Skip torch.compile.")
    return parser.parse_args()


def plan_demo_data(preset: str, workdir: Path) -> tuple[dict, dict]:
    """Convert the demo data, plan it with the plugin planner and return the plans and dataset.json."""
    from nnunet_resenc_plugin.datasets import convert_msd
    from nnunet_resenc_plugin.planning.api import plan_experiment

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir()
        os.environ[name] = str(workdir / name)
    folder = convert_msd(DEMO_DATA, workdir / "nnUNet_raw", DATASET_ID, name="GpuCheck",
                         labels=["background", "Anterior", "Posterior"])
    plans_name = plan_experiment(DATASET_ID, preset, configurations=list(CONFIGURATIONS), num_processes=2)
    preprocessed = workdir / "nnUNet_preprocessed" / folder.name
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    return plans, json.loads((preprocessed / "dataset.json").read_text())


def check_configuration(plans: dict, dataset_json: dict, configuration: str, args: argparse.Namespace,
                        deadline: float) -> dict:
    """Train ``args.iterations`` steps of one configuration and return timing and memory numbers."""
    import numpy as np
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_resenc_plugin.planning.memory import MemoryModel

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    label_manager = manager.get_label_manager(dataset_json)
    num_classes = label_manager.num_segmentation_heads
    channels = len(dataset_json["channel_names"])
    patch, batch = list(config.patch_size), config.batch_size
    device = torch.device(args.device)

    network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                     config.network_arch_init_kwargs_req_import, channels, num_classes,
                                     deep_supervision=True).to(device)
    scales = [list(s) for s in 1 / np.cumprod(np.vstack(config.pool_op_kernel_sizes), axis=0)][:-1]
    loss = DC_and_CE_loss({"batch_dice": config.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    use_deep_supervision = len(scales) >= 2
    if use_deep_supervision:
        weights = np.array([1 / 2**i for i in range(len(scales))])
        weights[-1] = 0
        loss = DeepSupervisionWrapper(loss, weights / weights.sum())
    else:
        network.decoder.deep_supervision = False
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    model = torch.compile(network) if cuda and not args.no_compile else network
    autocast_dtype = torch.float16 if cuda else torch.bfloat16

    data = torch.randn(batch, channels, *patch, device=device)
    targets = []
    for scale in (scales if use_deep_supervision else [[1.0] * len(patch)]):
        shape = [max(1, round(p * s)) for p, s in zip(patch, scale)]
        targets.append(torch.randint(0, num_classes, (batch, 1, *shape), device=device).float())
    target = targets if use_deep_supervision else targets[0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype):
            output = model(data)
            value = loss(output, target)
        if scaler is not None:
            scaler.scale(value).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            scaler.step(optimizer)
            scaler.update()
        else:
            value.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
            optimizer.step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    done = 0
    for _ in range(args.iterations):
        if time.monotonic() > deadline:
            logger.warning("Time limit reached after %d timed iterations of %s", done, configuration)
            break
        step()
        done += 1
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    estimate = MemoryModel(precision="fp16" if cuda else "bf16").estimate(
        config.network_arch_class_name, config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import, channels, num_classes, patch, batch)
    return {
        "configuration": configuration,
        "patch_size": patch,
        "batch_size": batch,
        "iterations": done,
        "iterations_per_second": done / elapsed if elapsed > 0 and done else float("nan"),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan"),
        "estimated_memory_gb": estimate.total_gb,
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    deadline = time.monotonic() + TIME_LIMIT
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device found: the GPU check needs one and was skipped.")
        return 0
    if args.device == "cuda":
        print(f"Device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        if args.plans is not None:
            if args.dataset_json is None:
                print("--plans needs --dataset-json.", file=sys.stderr)
                return 2
            plans, dataset_json = json.loads(args.plans.read_text()), json.loads(args.dataset_json.read_text())
        else:
            plans, dataset_json = plan_demo_data(args.preset, Path(workdir))
        print(f"{'configuration':<12} {'patch':<16} {'batch':>5} {'it/s':>7} {'peak GB':>8} {'estimate GB':>11}")
        for configuration in CONFIGURATIONS:
            if configuration not in plans["configurations"]:
                continue
            if time.monotonic() > deadline:
                logger.warning("Time limit reached; %s not checked", configuration)
                break
            row = check_configuration(plans, dataset_json, configuration, args, deadline)
            print(f"{row['configuration']:<12} {'x'.join(map(str, row['patch_size'])):<16} {row['batch_size']:>5} "
                  f"{row['iterations_per_second']:>7.2f} {row['peak_memory_gb']:>8.2f} "
                  f"{row['estimated_memory_gb']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
