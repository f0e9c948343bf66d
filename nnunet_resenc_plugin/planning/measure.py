"""Real training steps on the current device: peak memory and time per iteration.

These functions run the network for real, so they cost what training costs. The planner uses
``time_training_steps`` in its compute-aware mode; the memory benchmark uses the peak measurements to check the
estimates of ``memory.MemoryModel``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.planning.memory import _build_loss, _deep_supervision_shapes

logger = logging.getLogger(__name__)


def _make_batch(network_output_shapes: Sequence[tuple[int, ...]], data: torch.Tensor, num_classes: int):
    generator = torch.Generator(device="cpu").manual_seed(0)
    targets = []
    for shape in network_output_shapes:
        labels = torch.randint(0, num_classes, (shape[0], 1, *shape[2:]), generator=generator, dtype=torch.int16)
        targets.append(labels.to(data.device))
    return targets


def _train_step(network: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                targets: list[torch.Tensor], precision: str) -> None:
    """Run one step the way nnU-Net's trainer does: zero grads, forward, loss, backward, clip, SGD step."""
    optimizer.zero_grad(set_to_none=True)
    if precision == "fp32":
        output = network(data)
        loss = loss_fn(list(output) if isinstance(output, (list, tuple)) else [output], targets)
    else:
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        with torch.autocast(data.device.type, dtype=dtype):
            output = network(data)
            loss = loss_fn(list(output) if isinstance(output, (list, tuple)) else [output], targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
    optimizer.step()


def _setup(build_network: Callable[[], nn.Module], input_channels: int, num_classes: int,
           patch_size: Sequence[int], batch_size: int, device: torch.device):
    network = build_network().to(device)
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    data = torch.randn((batch_size, input_channels, *patch_size), device=device)
    with torch.no_grad():
        shapes = _deep_supervision_shapes(network(data))
    targets = _make_batch(shapes, data, num_classes)
    loss_fn = _build_loss(len(shapes))
    return network, optimizer, data, targets, loss_fn


def measure_cpu_peak_bytes(build_network: Callable[[], nn.Module], input_channels: int, num_classes: int,
                           patch_size: Sequence[int], batch_size: int, precision: str = "fp32") -> int:
    """Measure the peak CPU memory of nnU-Net-style training with the PyTorch profiler.

    Everything, from building the network to the second optimizer step, runs inside the profiler, and the peak
    is the maximum of the running sum of the allocations and frees it records. The second step is the one that
    holds the momentum buffers.

    Args:
        build_network: Builds the network with deep supervision on.
        input_channels: Channels of the input batch.
        num_classes: Output channels; random targets use labels below this value.
        patch_size: Spatial patch size.
        batch_size: Samples per batch.
        precision: ``fp32`` or ``bf16`` (CPU autocast).
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        network, optimizer, data, targets, loss_fn = _setup(build_network, input_channels, num_classes, patch_size,
                                                            batch_size, torch.device("cpu"))
        for _ in range(2):
            _train_step(network, loss_fn, optimizer, data, targets, precision)
        del network, optimizer, data, targets, loss_fn

    # NOTE: _memory_profile is the profiler's private timeline API (torch 2.x); export_memory_timeline uses it.
    timeline = prof._memory_profile().timeline
    current = 0
    peak = 0
    for _, action, (key, _), size in sorted(timeline, key=lambda event: event[0]):
        if key.device.type != "cpu":
            continue
        if action in (Action.PREEXISTING, Action.CREATE):
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def measure_cuda_peak_bytes(build_network: Callable[[], nn.Module], input_channels: int, num_classes: int,
                            patch_size: Sequence[int], batch_size: int, precision: str = "fp16") -> int:
    """Measure the peak CUDA memory of two training steps with ``torch.cuda.max_memory_allocated``.

    Args:
        build_network: Builds the network with deep supervision on.
        input_channels: Channels of the input batch.
        num_classes: Output channels.
        patch_size: Spatial patch size.
        batch_size: Samples per batch.
        precision: ``fp32``, ``fp16`` or ``bf16`` autocast.
    """
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    network, optimizer, data, targets, loss_fn = _setup(build_network, input_channels, num_classes, patch_size,
                                                        batch_size, device)
    for _ in range(2):
        _train_step(network, loss_fn, optimizer, data, targets, precision)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - baseline
    del network, optimizer, data, targets, loss_fn
    torch.cuda.empty_cache()
    return peak


def time_training_steps(build_network: Callable[[], nn.Module], input_channels: int, num_classes: int,
                        patch_size: Sequence[int], batch_sizes: Sequence[int], device: torch.device | str,
                        precision: str = "fp32", repeats: int = 1) -> dict[int, float]:
    """Return the seconds per training iteration at each batch size, for one network built once.

    Each batch size gets one warm-up step (new shapes make oneDNN and cuDNN pick kernels) and then ``repeats``
    timed steps, of which the fastest counts, because other processes on the machine only ever add time.

    Args:
        build_network: Builds the network with deep supervision on.
        input_channels: Channels of the input batch.
        num_classes: Output channels.
        patch_size: Spatial patch size.
        batch_sizes: Batch sizes to time.
        device: Device to time on.
        precision: ``fp32``, ``fp16`` or ``bf16`` autocast.
        repeats: Timed steps per batch size.
    """
    device = torch.device(device)
    network, optimizer, _, _, loss_fn = _setup(build_network, input_channels, num_classes, patch_size, 1, device)
    seconds: dict[int, float] = {}
    for batch_size in batch_sizes:
        data = torch.randn((batch_size, input_channels, *patch_size), device=device)
        with torch.no_grad():
            shapes = _deep_supervision_shapes(network(data))
        targets = _make_batch(shapes, data, num_classes)
        _train_step(network, loss_fn, optimizer, data, targets, precision)
        timings = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _train_step(network, loss_fn, optimizer, data, targets, precision)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - start)
        seconds[batch_size] = min(timings)
        logger.debug("patch %s, batch %d: %.3f s per iteration on %s", list(patch_size), batch_size,
                     seconds[batch_size], device)
    return seconds
