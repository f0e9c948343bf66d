"""Compare how fast networks start to learn: held-out Dice after a few hundred training iterations.

Each variant trains in this process with nnU-Net's own trainer, data loader, augmentation and loss. The
learning rate stays at its value in the first epoch of nnU-Net's 1000-epoch poly schedule, which is what the
first few hundred iterations of a real training see. Every ``--eval-every`` iterations the network predicts the fold's
validation cases with nnU-Net's sliding-window predictor (no mirroring) and the script records the mean Dice
over the foreground labels, computed on the preprocessed images.

The dataset must already be planned and preprocessed (the benchmark's ``nnUNet_preprocessed`` folder works).
Variants:

- ``plain_fp32``: stock ``nnUNetPlans`` (PlainConvUNet) with stock ``nnUNetTrainer``.
- ``stock_resenc_m_fp32``: stock ``nnUNetResEncUNetMPlans`` with stock ``nnUNetTrainer``.
- ``plugin_bf16`` / ``plugin_fp32``: the plugin plans as planned, with ``nnUNetTrainerResEnc``, CPU bfloat16
  on or off.
- ``plugin_zero_init_bf16``: the plugin plans with ``zero_init_residual`` forced on.
- ``plugin_no_zero_init_bf16``: the plugin plans with ``zero_init_residual`` forced off.

Usage:
    python scripts/benchmark_early_learning.py --preprocessed DIR/Dataset004_Hippocampus \
        --variants plain_fp32 plugin_bf16 --iterations 300 --eval-every 50 --batch-size 2 --json out.json
    python scripts/benchmark_early_learning.py --summarize out.json other.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("benchmark_early_learning")


@dataclass(frozen=True)
class Variant:
    """One network and trainer combination to train."""

    plans_name: str
    trainer: str
    bf16: bool
    arch_overrides: dict = field(default_factory=dict)


PLUGIN_PLANS = "nnUNetPluginResEncMBenchPlans"
VARIANTS: dict[str, Variant] = {
    "plain_fp32": Variant("nnUNetPlans", "nnUNetTrainer", False),
    "stock_resenc_m_fp32": Variant("nnUNetResEncUNetMPlans", "nnUNetTrainer", False),
    "plugin_bf16": Variant(PLUGIN_PLANS, "nnUNetTrainerResEnc", True),
    "plugin_fp32": Variant(PLUGIN_PLANS, "nnUNetTrainerResEnc", False),
    "plugin_zero_init_bf16": Variant(PLUGIN_PLANS, "nnUNetTrainerResEnc", True, {"zero_init_residual": True}),
    "plugin_no_zero_init_bf16": Variant(PLUGIN_PLANS, "nnUNetTrainerResEnc", True, {"zero_init_residual": False}),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preprocessed", type=Path,
                        help="Preprocessed dataset folder, for example nnUNet_preprocessed/Dataset004_Hippocampus.")
    parser.add_argument("--variants", nargs="+", default=["plain_fp32", "plugin_bf16"], choices=sorted(VARIANTS))
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=300, help="Training iterations per variant.")
    parser.add_argument("--eval-every", type=int, default=50, help="Iterations between evaluations.")
    parser.add_argument("--batch-size", type=int, default=2, help="Batch size for every variant.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Write the learning curves to this JSON file.")
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="JSON",
                        help="Train nothing; print the mean curves of earlier --json outputs, per variant and batch.")
    args = parser.parse_args()
    if args.summarize is None and args.preprocessed is None:
        parser.error("--preprocessed is required unless --summarize is given.")
    return args


def _dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    predicted, expected = prediction == label, reference == label
    denominator = predicted.sum() + expected.sum()
    if denominator == 0:
        return float("nan")
    return float(2 * np.logical_and(predicted, expected).sum() / denominator)


def _build_trainer(variant: Variant, name: str, args: argparse.Namespace):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_resenc_plugin.training.trainers import nnUNetTrainerResEnc

    plans = json.loads((args.preprocessed / f"{variant.plans_name}.json").read_text())
    plans = copy.deepcopy(plans)
    plans["plans_name"] = f"{variant.plans_name}_{name}"
    configuration = plans["configurations"][args.configuration]
    configuration["batch_size"] = args.batch_size
    configuration["architecture"]["arch_kwargs"].update(variant.arch_overrides)
    plans["continue_training"] = False
    dataset_json = json.loads((args.preprocessed / "dataset.json").read_text())

    os.environ["nnUNet_resenc_cpu_bf16"] = "1" if variant.bf16 else "0"
    trainer_class = nnUNetTrainerResEnc if variant.trainer == "nnUNetTrainerResEnc" else nnUNetTrainer
    trainer = trainer_class(plans, args.configuration, args.fold, dataset_json, torch.device("cpu"))
    return trainer


def _evaluate(trainer, predictor, cases: list[tuple[np.ndarray, np.ndarray]], labels: list[int]) -> float:
    import torch

    trainer.set_deep_supervision_enabled(False)
    scores = []
    with torch.no_grad():
        for data, reference in cases:
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
            prediction = logits.float().argmax(0).cpu().numpy()
            scores.extend(_dice(prediction, reference, label) for label in labels)
    trainer.set_deep_supervision_enabled(trainer.enable_deep_supervision)
    trainer.network.train()
    return float(np.nanmean(scores))


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train one variant for ``args.iterations`` iterations and return its learning curve."""
    import random

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_resenc_plugin.training import precision

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    trainer = _build_trainer(VARIANTS[name], name, args)
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=True, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__, None)

    _, validation_keys = trainer.do_split()
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, validation_keys)
    cases = []
    for key in validation_keys:
        data, seg, _, _ = dataset.load_case(key)
        cases.append((np.ascontiguousarray(data[:], dtype=np.float32), np.asarray(seg[:])[0]))
    labels = [int(value) for key, value in trainer.dataset_json["labels"].items() if key != "background"]

    curve = []
    losses = []
    start = time.perf_counter()
    train_seconds = 0.0
    for iteration in range(1, args.iterations + 1):
        step_start = time.perf_counter()
        losses.append(float(trainer.train_step(next(trainer.dataloader_train))["loss"]))
        train_seconds += time.perf_counter() - step_start
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            with precision.cpu_autocast(VARIANTS[name].bf16 and getattr(trainer, "cpu_bf16", False)):
                dice = _evaluate(trainer, predictor, cases, labels)
            recent = losses[-args.eval_every:]
            curve.append({"iteration": iteration, "dice": dice, "loss": float(np.mean(recent))})
            logger.info("%s: iteration %d, mean loss %.4f, held-out Dice %.3f", name, iteration,
                        curve[-1]["loss"], dice)
    trainer.on_train_end()
    return {"variant": name, "seed": args.seed, "batch_size": args.batch_size, "curve": curve,
            "seconds_per_iteration": train_seconds / args.iterations,
            "wall_seconds": time.perf_counter() - start, "validation_cases": len(cases)}


def print_table(results: list[dict]) -> None:
    """Print one Markdown row per variant and batch size: mean s/iteration and mean Dice at each checkpoint."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for result in results:
        groups.setdefault((result["variant"], result["batch_size"]), []).append(result)
    checkpoints = sorted({point["iteration"] for result in results for point in result["curve"]})
    print("| variant | batch | seeds | s / iteration | " + " | ".join(f"Dice @{it}" for it in checkpoints) + " |")
    print("|---|---:|---|---:|" + "---:|" * len(checkpoints))
    for (variant, batch_size), runs in groups.items():
        cells = []
        for iteration in checkpoints:
            values = [point["dice"] for run in runs for point in run["curve"] if point["iteration"] == iteration]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        seeds = ", ".join(str(run["seed"]) for run in runs)
        seconds = np.mean([run["seconds_per_iteration"] for run in runs])
        print(f"| {variant} | {batch_size} | {seeds} | {seconds:.2f} | " + " | ".join(cells) + " |")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    if args.summarize:
        print_table([result for path in args.summarize for result in json.loads(path.read_text())])
        return 0
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ["nnUNet_preprocessed"] = str(args.preprocessed.resolve().parent)
    os.environ.setdefault("nnUNet_raw", str(args.preprocessed.resolve().parent))
    workdir = tempfile.mkdtemp(prefix="early_learning_")
    os.environ["nnUNet_results"] = workdir
    results = []
    for name in args.variants:
        results.append(run_variant(name, args))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
