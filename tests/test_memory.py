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


@pytest.mark.parametrize("spacing, patch, batch, preset, precision", [
    ((1.0, 1.0, 1.0), (32, 32, 32), 2, "S", "fp32"),
    ((1.0, 1.0), (128, 128), 4, "S", "fp32"),
    # bf16 autocast keeps bf16 copies of the weights and runs instance norm in fp32; the trace sees both.
    ((1.0, 1.0), (56, 40), 12, "M", "bf16"),
])
def test_estimate_within_ten_percent_of_cpu_peak(spacing, patch, batch, preset, precision):
    torch.set_num_threads(1)
    topology, arch_kwargs = _arch(spacing, patch, preset)
    kwargs = resolve_architecture(arch_kwargs, REQUIRES_IMPORT)

    estimate = MemoryModel(precision).estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3,
                                               topology.patch_size, batch)
    measured = measure_cpu_peak_bytes(
        lambda: ResEncUNet(input_channels=1, num_classes=3, deep_supervision=True, **kwargs),
        1, 3, topology.patch_size, batch, precision)

    assert measured > 0
    assert abs(estimate.total - measured) / measured < 0.10


def test_estimate_parts_and_batch_scaling():
    topology, arch_kwargs = _arch((1.0, 1.0, 1.0), (16, 16, 16))
    model = MemoryModel("fp32")

    single = model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3, topology.patch_size, 1)
    triple = model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 3, topology.patch_size, 3)

    assert single.parameters == single.optimizer_state == triple.parameters
    assert 0 < single.gradients <= 2 * single.parameters
    # One fp32 input channel plus int16 targets at the two deep-supervision scales, per sample.
    assert single.inputs == 16**3 * 4 + 16**3 * 2 + 8**3 * 2
    assert triple.inputs == 3 * single.inputs
    assert triple.activations > 2.5 * single.activations
    assert triple.total == (triple.parameters * 2 + triple.gradients + triple.inputs + triple.activations
                           + triple.workspace)


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


def test_bad_precision_and_batch():
    with pytest.raises(PlanningError, match="Valid precisions: fp32, fp16, bf16"):
        MemoryModel("fp8")
    topology, arch_kwargs = _arch((1.0, 1.0), (32, 32))
    with pytest.raises(PlanningError, match="Batch size must be at least 1"):
        MemoryModel().estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, 1, 2, topology.patch_size, 0)
