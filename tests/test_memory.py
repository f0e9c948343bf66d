"""Tests of the measured memory model against profiler peaks of real CPU training steps."""

from __future__ import annotations

import pytest
import torch

from nnunet_resenc_plugin.errors import PlanningError
from nnunet_resenc_plugin.networks.resenc_unet import ResEncUNet
from nnunet_resenc_plugin.planning import memory
from nnunet_resenc_plugin.planning.measure import measure_cpu_peak_bytes
from nnunet_resenc_plugin.planning.memory import MemoryModel, resolve_architecture
from nnunet_resenc_plugin.planning.planner import NETWORK_CLASS_NAME, REQUIRES_IMPORT, build_arch_kwargs
from nnunet_resenc_plugin.planning.presets import get_preset, parse_block_options
from nnunet_resenc_plugin.planning.topology import compute_topology


def _arch(spacing, patch, preset="S", **options):
    topology = compute_topology(spacing, patch)
    return topology, build_arch_kwargs(topology, get_preset(preset), parse_block_options(options))


@pytest.mark.parametrize("spacing, patch, batch", [
    ((1.0, 1.0, 1.0), (32, 32, 32), 2),
    ((1.0, 1.0), (128, 128), 4),
])
def test_estimate_within_ten_percent_of_cpu_peak(spacing, patch, batch):
    torch.set_num_threads(1)
    topology, arch_kwargs = _arch(spacing, patch)
    kwargs = resolve_architecture(arch_kwargs, REQUIRES_IMPORT)

    estimate = MemoryModel("fp32").estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3,
                                            topology.patch_size, batch)
    measured = measure_cpu_peak_bytes(
        lambda: ResEncUNet(input_channels=1, num_classes=3, deep_supervision=True, **kwargs),
        1, 3, topology.patch_size, batch)

    assert measured > 0
    assert abs(estimate.total - measured) / measured < 0.10


def test_estimate_parts_and_batch_scaling():
    topology, arch_kwargs = _arch((1.0, 1.0, 1.0), (16, 16, 16))
    model = MemoryModel("fp32")

    one = model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3, topology.patch_size, 1)
    three = model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3, topology.patch_size, 3)

    assert one.parameters == one.optimizer_state == three.parameters
    assert 0 < one.gradients <= 2 * one.parameters
    # One fp32 input channel plus int16 targets at the two deep-supervision scales, per sample.
    assert one.inputs == 16**3 * 4 + 16**3 * 2 + 8**3 * 2
    assert three.inputs == 3 * one.inputs
    assert three.activations > 2.5 * one.activations
    assert three.total == (three.parameters * 2 + three.gradients + three.inputs + three.activations
                           + three.workspace)


def test_max_batch_size_fits_target():
    topology, arch_kwargs = _arch((1.0, 1.0, 1.0), (16, 16, 16))
    model = MemoryModel("fp32")
    args = (NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3, topology.patch_size)
    target = 200e6

    batch = model.max_batch_size(target, *args)

    assert batch >= 1
    assert model.estimate(*args, batch_size=batch).total <= target
    assert model.estimate(*args, batch_size=batch + 1).total > target
    assert model.max_batch_size(1e3, *args) == 0


def test_traces_cached_per_topology(monkeypatch):
    calls = []
    original = memory.trace_training_step

    def counting(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(memory, "trace_training_step", counting)
    topology, arch_kwargs = _arch((1.0, 1.0), (32, 32))
    model = MemoryModel("fp32")
    for batch in (1, 5, 9):
        model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 2, topology.patch_size, batch)

    assert calls == [1, 2]


def test_bf16_halves_activations():
    topology, arch_kwargs = _arch((1.0, 1.0), (64, 64))
    args = (NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 2, topology.patch_size, 4)

    fp32 = MemoryModel("fp32").estimate(*args)
    bf16 = MemoryModel("bf16").estimate(*args)

    assert bf16.activations < 0.8 * fp32.activations
    assert bf16.parameters == fp32.parameters


def test_bad_precision_and_batch():
    with pytest.raises(PlanningError, match="Valid precisions: fp32, fp16, bf16"):
        MemoryModel("fp8")
    topology, arch_kwargs = _arch((1.0, 1.0), (32, 32))
    with pytest.raises(PlanningError, match="Batch size must be at least 1"):
        MemoryModel().estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 2, topology.patch_size, 0)
