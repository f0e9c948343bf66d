"""bfloat16 autocast for training on the CPU.

nnU-Net 2.8 trains in float32 on the CPU and uses float16 autocast only on CUDA. The plugin trainers turn on
bfloat16 autocast by default on CPUs with native bfloat16 instructions (AVX512-BF16 or AMX on x86).

It is the default because of a quiet-machine run of ``scripts/benchmark_network.py`` (2-core Xeon with AVX-512
BF16 and AMX, load average 0.4). There, a training step of the plugin network (forward, deep-supervision loss,
backward) under bfloat16 autocast was 2.28 times faster than the stock network in float32 in 3D and 2.12 times
faster in 2D. Earlier runs on the same machine under heavy load showed bfloat16 slower, which shows only that
timings under load are unreliable. docs/benchmarks.md has the numbers.

NOTE: whether bfloat16 training reaches the Dice of float32 training is not measured yet.
``nnUNet_resenc_cpu_bf16=0`` turns bfloat16 autocast off.
"""

from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from nnunet_resenc_plugin.training.settings import read_cpu_bf16_mode

logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Return whether this CPU has bfloat16 arithmetic instructions (x86 AVX512-BF16 or AMX tiles).

    Uses torch's CPU feature probes. Other architectures, where torch exposes no such probe, return False, so
    the plugin trains them in float32 unless ``nnUNet_resenc_cpu_bf16=1`` forces bfloat16.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is None:
            continue
        try:
            if probe():
                return True
        except RuntimeError:
            continue
    return False


def use_cpu_bf16(device: torch.device) -> bool:
    """Decide whether training on ``device`` uses bfloat16 autocast.

    Args:
        device: The trainer's device. Only ``cpu`` can use it; CUDA keeps nnU-Net's own float16 autocast.

    Returns:
        True for a CPU device when ``nnUNet_resenc_cpu_bf16`` is ``1``, or when it is ``auto`` (the default)
        and the CPU has native bfloat16 instructions.
    """
    if device.type != "cpu":
        return False
    mode = read_cpu_bf16_mode()
    if mode == "auto":
        return cpu_has_native_bf16()
    return mode == "on"


def cpu_autocast(enabled: bool) -> ContextManager:
    """Return a bfloat16 CPU autocast context when ``enabled``, else a context that does nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def to_float32(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Cast a network output (one tensor or a deep-supervision list) to float32 for the loss."""
    if isinstance(output, (list, tuple)):
        return [item.float() for item in output]
    return output.float()
