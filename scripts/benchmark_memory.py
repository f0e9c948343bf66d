"""Compare the planner's memory estimate and nnU-Net's stock heuristic with the measured training peak.

For each configuration the script builds the plugin's ResEncUNet with a preset's width and depth, then reports

- the measured peak of two nnU-Net-style training steps: on CUDA ``torch.cuda.max_memory_allocated``, on the
  CPU the running sum of the allocations and frees that the PyTorch profiler records;
- the estimate of ``nnunet_resenc_plugin.planning.memory.MemoryModel`` at the same precision;
- nnU-Net's stock heuristic: convolution feature-map elements of the network, scaled by the ResEnc planner's
  reference value (680e6 in 3D and 135e6 in 2D at batch 2 and 12 for 8 GB, nnunetv2 2.8.1).

Usage::

    python scripts/benchmark_memory.py [--device cpu|cuda] [--cases NAME ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass

import torch

from nnunet_resenc_plugin.networks.resenc_unet import ResEncUNet
from nnunet_resenc_plugin.planning.measure import measure_cpu_peak_bytes, measure_cuda_peak_bytes
from nnunet_resenc_plugin.planning.memory import MemoryModel, resolve_architecture
from nnunet_resenc_plugin.planning.planner import NETWORK_CLASS_NAME, REQUIRES_IMPORT, build_arch_kwargs
from nnunet_resenc_plugin.planning.presets import get_preset, parse_block_options
from nnunet_resenc_plugin.planning.topology import compute_topology

logger = logging.getLogger("benchmark_memory")

# nnU-Net 2.8.1 ResEncUNetPlanner reference values: feature-map elements that fill 8 GB at the reference batch.
STOCK_REFERENCE = {2: (135_000_000, 12), 3: (680_000_000, 2)}
STOCK_REFERENCE_GB = 8


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    name: str
    preset: str
    spacing: tuple[float, ...]
    patch: tuple[int, ...]
    batch: int
    options: tuple[tuple[str, object], ...] = ()
    num_classes: int = 3


CASES = (
    Case("3d-M-hippocampus", "M", (1.0, 1.0, 1.0), (40, 56, 40), 2),
    Case("3d-S-hippocampus", "S", (1.0, 1.0, 1.0), (40, 56, 40), 4),
    Case("3d-M-64cube", "M", (1.0, 1.0, 1.0), (64, 64, 64), 1),
    Case("3d-S-anisotropic", "S", (5.0, 0.5, 0.5), (4, 128, 128), 2),
    Case("3d-M-bottleneck-se", "M", (1.0, 1.0, 1.0), (32, 32, 32), 2,
         (("block", "bottleneck"), ("squeeze_excitation", True))),
    Case("2d-M-hippocampus", "M", (1.0, 1.0), (56, 40), 12),
    Case("2d-M-nuclei", "M", (1.0, 1.0), (192, 160), 4, num_classes=2),
    Case("2d-L-256", "L", (1.0, 1.0), (256, 256), 4, num_classes=2),
    Case("2d-S-batchnorm", "S", (1.0, 1.0), (128, 128), 8, (("norm", "batch"),), num_classes=2),
)


def stock_estimate_bytes(network: ResEncUNet, patch: tuple[int, ...], batch: int) -> float:
    """nnU-Net's heuristic: feature-map elements per sample x batch, scaled to GB by the reference value."""
    reference, reference_batch = STOCK_REFERENCE[len(patch)]
    elements = network.compute_conv_feature_map_size(list(patch))
    return elements * batch / reference_batch / reference * STOCK_REFERENCE_GB * 1e9


def run_case(case: Case, device: str, precision: str, model: MemoryModel) -> dict:
    """Measure and estimate one case; return a result row."""
    topology = compute_topology(case.spacing, case.patch)
    arch_kwargs = build_arch_kwargs(topology, get_preset(case.preset), parse_block_options(dict(case.options)))
    kwargs = resolve_architecture(arch_kwargs, REQUIRES_IMPORT)

    def build() -> ResEncUNet:
        return ResEncUNet(input_channels=1, num_classes=case.num_classes, deep_supervision=True, **kwargs)

    start = time.perf_counter()
    estimate = model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, case.num_classes,
                              topology.patch_size, case.batch)
    estimate_seconds = time.perf_counter() - start
    measure = measure_cuda_peak_bytes if device == "cuda" else measure_cpu_peak_bytes
    measured = measure(build, 1, case.num_classes, topology.patch_size, case.batch, precision)
    with torch.device("meta"):
        stock = stock_estimate_bytes(build(), topology.patch_size, case.batch)
    return {
        "case": case.name,
        "patch": list(topology.patch_size),
        "batch": case.batch,
        "stages": topology.n_stages,
        "measured_mb": measured / 1e6,
        "estimate_mb": estimate.total / 1e6,
        "estimate_error_pct": 100.0 * (estimate.total - measured) / measured,
        "stock_mb": stock / 1e6,
        "stock_error_pct": 100.0 * (stock - measured) / measured,
        "estimate_seconds": estimate_seconds,
    }


def format_table(rows: list[dict]) -> str:
    """Return the result rows as a Markdown table."""
    lines = ["| case | patch | batch | stages | measured MB | estimate MB | error | stock heuristic MB | stock error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['case']} | {'x'.join(map(str, row['patch']))} | {row['batch']} | {row['stages']} | "
            f"{row['measured_mb']:.0f} | {row['estimate_mb']:.0f} | {row['estimate_error_pct']:+.1f}% | "
            f"{row['stock_mb']:.0f} | {row['stock_error_pct']:+.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                        help="Training precision (default: fp32 on the CPU, fp16 on CUDA).")
    parser.add_argument("--cases", nargs="+", default=None, help="Case names to run (default: all).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the measured steps.")
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    precision = args.precision or ("fp16" if args.device == "cuda" else "fp32")
    model = MemoryModel(precision)
    selected = [case for case in CASES if args.cases is None or case.name in args.cases]
    rows = []
    for case in selected:
        row = run_case(case, args.device, precision, model)
        logger.info("%s: measured %.0f MB, estimate %+.1f%%, stock %+.1f%%", case.name, row["measured_mb"],
                    row["estimate_error_pct"], row["stock_error_pct"])
        rows.append(row)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": args.device, "precision": precision, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
