"""Compare training-step speed and peak memory of ResEncUNet with dynamic-network-architectures' ResidualEncoderUNet.

Both networks are built in one process at the same configuration and with the same weights, and their
forward+backward steps are timed alternately, so that load changes on the machine affect both alike. The ratio
printed is stock time / plugin time: 1.0 or more means the plugin is at least as fast. Optional fast paths of
the plugin network (channels-last memory format, bf16 autocast, torch.compile) join the same rotation.

Peak memory is the largest sum of bytes allocated minus bytes freed during one training step, replayed from the
CPU allocator events that the PyTorch profiler records with `profile_memory=True` (on CUDA, the caching
allocator's `max_memory_allocated` is used instead). It counts activations, gradients and temporaries, not the
parameters that exist before the step.

Usage:
    python scripts/benchmark_network.py                     # both configurations, about 5 minutes on 2 cores
    python scripts/benchmark_network.py --config 3d --iterations 5 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn
from tqdm import tqdm

from nnunet_resenc_plugin.networks import ResEncUNet
from nnunet_resenc_plugin.networks.conversion import stock_to_plugin_state_dict

logger = logging.getLogger("benchmark_network")

MIB = 2**20


def _stock_resenc_m_kwargs(dim: int, n_stages: int, features: list[int], n_blocks: list[int]) -> dict:
    """Return arch kwargs shaped like nnU-Net's ResEnc M plans (instance norm, LeakyReLU, strided convs)."""
    return dict(
        n_stages=n_stages,
        features_per_stage=features,
        conv_op=nn.Conv3d if dim == 3 else nn.Conv2d,
        kernel_sizes=[[3] * dim] * n_stages,
        strides=[[1] * dim] + [[2] * dim] * (n_stages - 1),
        n_blocks_per_stage=n_blocks,
        n_conv_per_stage_decoder=[1] * (n_stages - 1),
        conv_bias=True,
        norm_op=nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None,
        dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
    )


#: name -> (arch kwargs, default batch size, patch size). The 3D patch is the one nnU-Net plans for the MSD
#: hippocampus; the 2D configuration is ResEnc M's 7-stage layout for 256x256 slices.
CONFIGS = {
    "3d": (_stock_resenc_m_kwargs(3, 4, [32, 64, 128, 256], [1, 3, 4, 6]), 2, (40, 56, 40)),
    "2d": (_stock_resenc_m_kwargs(2, 7, [32, 64, 128, 256, 512, 512, 512], [1, 3, 4, 6, 6, 6, 6]), 2, (256, 256)),
}


@dataclass
class Measurement:
    """Step times and peak step memory of one network variant."""

    name: str
    seconds: float
    min_seconds: float
    max_seconds: float
    peak_mib: float


def _channels_last_format(dim: int) -> torch.memory_format:
    return torch.channels_last_3d if dim == 3 else torch.channels_last


def training_step(network: nn.Module, x: torch.Tensor, autocast: bool) -> None:
    """Run one forward and backward pass with a deep-supervision loss, as an nnU-Net training step does."""
    network.zero_grad(set_to_none=True)
    context = torch.autocast(x.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        outputs = network(x)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        loss = sum(output.float().square().mean() / 2**index for index, output in enumerate(outputs))
    loss.backward()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(network: nn.Module, x: torch.Tensor, autocast: bool) -> float:
    """Return the wall time of one training step, in seconds."""
    _synchronize(x.device)
    start = time.perf_counter()
    training_step(network, x, autocast)
    _synchronize(x.device)
    return time.perf_counter() - start


def peak_step_memory(network: nn.Module, x: torch.Tensor, autocast: bool) -> float:
    """Return the peak memory allocated during one training step above the memory in use before it, in MiB."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        baseline = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        training_step(network, x, autocast)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - baseline) / MIB

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        training_step(network, x, autocast)

    # Memory events carry the signed size of each allocation (positive) or free (negative).
    events = [event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"]
    events.sort(key=lambda event: event.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / MIB


def measure_alternating(
    variants: dict[str, tuple[nn.Module, torch.Tensor, bool]], warmup: int, iterations: int
) -> list[Measurement]:
    """Time the variants in turns (rotating the order each round) and measure each one's peak memory.

    Args:
        variants: name -> (network, input, whether to use bf16 autocast).
        warmup: Untimed steps per variant before timing.
        iterations: Timed steps per variant; the median is reported.
    """
    names = list(variants)
    for name in names:
        network, x, autocast = variants[name]
        for _ in range(warmup):
            training_step(network, x, autocast)

    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in tqdm(range(iterations), desc="timing " + ", ".join(names), leave=False):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            network, x, autocast = variants[name]
            times[name].append(timed_step(network, x, autocast))

    measurements = []
    for name in names:
        network, x, autocast = variants[name]
        peak = peak_step_memory(network, x, autocast)
        measurements.append(
            Measurement(name, statistics.median(times[name]), min(times[name]), max(times[name]), peak)
        )
    return measurements


def build_pair(config: str, device: torch.device, num_classes: int = 3) -> tuple[nn.Module, nn.Module, int]:
    """Build the stock and plugin networks of `config` with identical weights, in training mode."""
    arch_kwargs, _, patch = CONFIGS[config]
    torch.manual_seed(0)
    stock = ResidualEncoderUNet(input_channels=1, num_classes=num_classes, deep_supervision=True, **arch_kwargs)
    stock.apply(stock.initialize)
    plugin = ResEncUNet(input_channels=1, num_classes=num_classes, deep_supervision=True, **arch_kwargs)
    plugin.load_state_dict(stock_to_plugin_state_dict(stock.state_dict(), reference=plugin))
    return stock.to(device).train(), plugin.to(device).train(), len(patch)


@contextlib.contextmanager
def _logged(message: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("%s ...", message)
    yield
    logger.info("%s done in %.1f s", message, time.perf_counter() - start)


def benchmark_config(config: str, args: argparse.Namespace, device: torch.device) -> list[Measurement]:
    """Measure stock, plugin and the plugin's fast paths for one configuration, all timed in alternation."""
    arch_kwargs, default_batch, patch = CONFIGS[config]
    batch = args.batch_size or default_batch
    stock, plugin, dim = build_pair(config, device)
    x = torch.randn(batch, 1, *patch, device=device)

    variants = {"stock": (stock, x, False), "plugin": (plugin, x, False)}
    if "channels_last" in args.fast_paths:
        memory_format = _channels_last_format(dim)
        channels_last = ResEncUNet(input_channels=1, num_classes=3, deep_supervision=True, **arch_kwargs)
        channels_last.load_state_dict(plugin.state_dict())
        channels_last = channels_last.to(device, memory_format=memory_format).train()
        variants["plugin+channels_last"] = (channels_last, x.to(memory_format=memory_format), False)
    if "bf16" in args.fast_paths:
        variants["plugin+bf16_autocast"] = (plugin, x, True)
    if args.compile:
        compiled = torch.compile(plugin, dynamic=False)
        with _logged(f"{config}: first step of plugin+compile (compilation)"):
            training_step(compiled, x, False)
        variants["plugin+compile"] = (compiled, x, False)

    with _logged(f"{config}: {', '.join(variants)}; batch {batch}, patch {list(patch)}"):
        return measure_alternating(variants, args.warmup, args.iterations)


def format_table(config: str, results: list[Measurement], batch: int) -> str:
    """Format one configuration's measurements as a Markdown table with the speed ratio to the stock network."""
    stock = next(result for result in results if result.name == "stock")
    plugin = next(result for result in results if result.name == "plugin")
    lines = [
        f"{config} (batch {batch}, patch {list(CONFIGS[config][2])}):",
        "| variant | median step (s) | min - max (s) | speed vs stock (median) | peak step memory (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.seconds:.3f} | {result.min_seconds:.3f} - {result.max_seconds:.3f} "
            f"| {stock.seconds / result.seconds:.2f}x | {result.peak_mib:.0f} |"
        )
    lines.append(
        f"ratio stock time / plugin time: {stock.seconds / plugin.seconds:.3f} (medians), "
        f"{stock.min_seconds / plugin.min_seconds:.3f} (fastest steps)"
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all", help="configuration to measure")
    parser.add_argument("--iterations", type=int, default=3, help="timed training steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps per variant")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: 2 for each config)")
    parser.add_argument(
        "--fast-paths",
        nargs="*",
        choices=["channels_last", "bf16"],
        default=["channels_last", "bf16"],
        help="plugin fast paths to measure",
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    logger.info("torch %s, %d threads, device %s", torch.__version__, torch.get_num_threads(), device)

    configs = list(CONFIGS) if args.config == "all" else [args.config]
    for config in configs:
        results = benchmark_config(config, args, device)
        print(format_table(config, results, args.batch_size or CONFIGS[config][1]), flush=True)


if __name__ == "__main__":
    main()
