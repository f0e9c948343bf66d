"""bfloat16 autocast for training on the CPU.

nnU-Net 2.8 trains in float32 on the CPU and uses float16 autocast only on CUDA. The plugin trainers turn on
bfloat16 autocast by default on CPUs with native bfloat16 instructions (AVX512-BF16 or AMX on x86).

NOTE: the speed-up is not confirmed for the plugin network. One forward and backward pass of stock ResEnc M
(batch 7, 40x56x40) took 5.4 s in float32 and 2.7 s in bfloat16 on an idle 2-core AMX machine, but interleaved
runs of the plugin's preset M network at batch 2 on the same, heavily shared, machine were slower in bfloat16
(see docs/benchmarks.md). ``nnUNet_resenc_cpu_bf16=0`` turns it off.
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
