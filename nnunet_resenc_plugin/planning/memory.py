"""Peak training memory of a candidate network, measured from the network itself.

nnU-Net's planners count convolution feature-map elements and compare the count with a hand-set reference value.
This module instead traces one training step of the real network and loss on fake tensors (no data, no
compute) and adds up what a training step keeps in memory:

- parameters and the SGD momentum buffers (nnU-Net trains with SGD and Nesterov momentum);
- the input batch (fp32) and the int16 targets at every deep-supervision scale;
- every tensor that autograd saves for the backward pass, found with ``torch.autograd.graph.saved_tensors_hooks``
  and counted once per storage, in the dtype that the chosen precision produces;
- the parameter gradients, which backward creates while it frees saved tensors. The trace records the order in
  which the forward pass saves tensors and uses parameters; backward runs in reverse order, so the peak is the
  largest sum of "saved tensors not yet freed" plus "gradients already created" over that sequence;
- a workspace term for the largest short-lived tensors of the backward pass;
- the optimizer step, where SGD with weight decay holds one temporary copy of the gradients.

The trace is linear in the batch size, so each topology is traced at batch sizes 1 and 2 and cached.
"""

from __future__ import annotations

import json
import logging
import pydoc
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.errors import PlanningError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
# Upper end of the batch-size search; planners cap batches far below this.
MAX_BATCH_SIZE = 4096

# Short-lived tensors during backward, as a multiple of the largest saved activation: while backward passes that
# activation it holds the incoming gradient and the gradient it produces, both of the activation's size.
# NOTE: checked against profiler peaks of fp32 training steps on the CPU (scripts/benchmark_memory.py, table in
# docs/benchmarks.md); CUDA kernels (cuDNN workspaces, the caching allocator's rounding) may need another value.
WORKSPACE_FACTOR = 2.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one training step, in bytes.

    The parts add up to the peak: ``gradients`` is the share of the gradients alive at the backward peak, or at
    the optimizer step when that is higher (then ``activations`` is 0).

    Attributes:
        parameters: Network weights.
        gradients: Gradients alive at the peak, including the optimizer's temporary copy at the step.
        optimizer_state: SGD momentum buffers, one per weight.
        inputs: Input batch and the targets of every deep-supervision output.
        activations: Tensors saved for the backward pass that are still alive at the peak.
        workspace: Short-lived tensors of the backward pass.
    """

    parameters: int
    gradients: int
    optimizer_state: int
    inputs: int
    activations: int
    workspace: int

    @property
    def total(self) -> int:
        """Estimated peak in bytes."""
        return (self.parameters + self.gradients + self.optimizer_state + self.inputs + self.activations
                + self.workspace)

    @property
    def total_gb(self) -> float:
        """Estimated peak in GB (10**9 bytes)."""
        return self.total / 1e9


@dataclass(frozen=True)
class _Trace:
    """What one traced training step holds at one batch size.

    ``events`` lists, in forward order, the bytes of each newly saved storage (``saved``) and of the parameters
    of each module as it runs (``gradient``, the size of the gradients that backward will create for them).
    """

    parameters: int
    inputs: int
    events: tuple[tuple[str, int], ...]

    @property
    def activations(self) -> int:
        """Bytes of all tensors saved for backward."""
        return sum(size for kind, size in self.events if kind == "saved")

    @property
    def largest_activation(self) -> int:
        """Bytes of the largest saved storage."""
        return max((size for kind, size in self.events if kind == "saved"), default=0)


def backward_peak(events: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """Return (saved bytes, gradient bytes) at the backward step where their sum is largest.

    Backward visits the forward sequence from its end. Before it reaches position ``k``, the storages saved at
    positions below ``k`` are still alive, and the gradients of the parameters used at ``k`` or later exist.
    """
    saved_total = sum(size for kind, size in events if kind == "saved")
    best = (saved_total, 0)
    saved_before = saved_total
    gradients_after = 0
    for kind, size in reversed(events):
        if kind == "saved":
            saved_before -= size
        else:
            gradients_after += size
        if saved_before + gradients_after > sum(best):
            best = (saved_before, gradients_after)
    return best


def resolve_architecture(arch_kwargs: Mapping[str, Any], requires_import: Sequence[str]) -> dict:
    """Return a copy of ``arch_kwargs`` with the dotted paths in ``requires_import`` replaced by classes.

    Raises:
        PlanningError: If a dotted path does not name an importable object.
    """
    resolved = dict(arch_kwargs)
    for key in requires_import:
        value = resolved.get(key)
        if isinstance(value, str):
            located = pydoc.locate(value)
            if located is None:
                raise PlanningError(f"Cannot import {value!r} given for {key!r}; check the dotted path.")
            resolved[key] = located
    return resolved


def _precision_context(precision: str, device_type: str):
    if precision == "fp32":
        return torch.autocast(device_type, enabled=False)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type, dtype=dtype)


def _deep_supervision_shapes(output: Any) -> list[tuple[int, ...]]:
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return [tuple(item.shape) for item in outputs]


def _build_loss(n_outputs: int) -> nn.Module:
    """Build nnU-Net's default training loss (Dice plus cross-entropy, wrapped for deep supervision)."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    # nnU-Net halves the weight per scale and drops the lowest-resolution output; with a single output the
    # only weight stays.
    weights = [0.5**index for index in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    return DeepSupervisionWrapper(loss, weights)


def trace_training_step(
    build_network: Callable[[], nn.Module],
    input_channels: int,
    patch_size: Sequence[int],
    batch_size: int,
    precision: str = "fp32",
) -> _Trace:
    """Trace the forward pass and loss of one training step on fake tensors.

    Args:
        build_network: Builds the network with deep supervision on; called inside the fake-tensor mode.
        input_channels: Channels of the input batch.
        patch_size: Spatial patch size, one entry per axis.
        batch_size: Samples per batch.
        precision: ``fp32``, ``fp16`` or ``bf16`` autocast.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    # Autocast for CUDA needs a CUDA runtime. Without one, CPU autocast at the same dtype is used instead.
    # NOTE: CPU and CUDA autocast keep slightly different op lists in fp32, so fp16 estimates made without a GPU
    # are approximate.
    device_type = "cuda" if precision != "fp32" and torch.cuda.is_available() else "cpu"
    events: list[tuple[str, int]] = []
    seen: set[int] = set()
    with FakeTensorMode(), torch.device(device_type):
        network = build_network()
        parameter_storages = {p.untyped_storage()._cdata for p in network.parameters()}
        parameters = sum(p.numel() * p.element_size() for p in network.parameters())
        data = torch.empty((batch_size, input_channels, *patch_size), dtype=torch.float32)

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key not in parameter_storages and key not in seen:
                seen.add(key)
                events.append(("saved", storage.nbytes()))
            return tensor

        def record_parameters(module: nn.Module, _inputs: Any) -> None:
            size = sum(p.numel() * p.element_size() for p in module.parameters(recurse=False) if p.requires_grad)
            if size:
                events.append(("gradient", size))

        handles = [module.register_forward_pre_hook(record_parameters) for module in network.modules()
                   if any(True for _ in module.parameters(recurse=False))]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with _precision_context(precision, device_type):
                output = network(data)
                shapes = _deep_supervision_shapes(output)
                # nnU-Net's data loader delivers int16 label maps, one per deep-supervision scale.
                targets = [torch.zeros((shape[0], 1, *shape[2:]), dtype=torch.int16) for shape in shapes]
                loss_fn = _build_loss(len(shapes))
                outputs = output if isinstance(output, (list, tuple)) else [output]
                loss_fn(list(outputs), targets)
        for handle in handles:
            handle.remove()

    inputs = data.numel() * data.element_size() + sum(t.numel() * t.element_size() for t in targets)
    return _Trace(parameters=parameters, inputs=inputs, events=tuple(events))


class MemoryModel:
    """Estimate peak training memory for candidate (patch, batch) pairs, with a cache per topology.

    Args:
        precision: ``fp32`` (the CPU default), ``fp16`` (nnU-Net's CUDA autocast) or ``bf16``.
        workspace_factor: Short-lived backward tensors as a multiple of the largest saved activation.
    """

    def __init__(self, precision: str = "fp32", workspace_factor: float = WORKSPACE_FACTOR) -> None:
        if precision not in PRECISIONS:
            raise PlanningError(f"Unknown precision {precision!r}. Valid precisions: {', '.join(PRECISIONS)}.")
        self.precision = precision
        self.workspace_factor = workspace_factor
        self._cache: dict[str, tuple[_Trace, _Trace]] = {}

    def estimate(
        self,
        network_class_name: str,
        arch_kwargs: Mapping[str, Any],
        requires_import: Sequence[str],
        input_channels: int,
        num_classes: int,
        patch_size: Sequence[int],
        batch_size: int,
    ) -> MemoryEstimate:
        """Estimate the peak memory of one training step.

        Args:
            network_class_name: Dotted path of the network class, as in the plans.
            arch_kwargs: Architecture keyword arguments, as in the plans.
            requires_import: Keys of ``arch_kwargs`` that hold dotted paths.
            input_channels: Image channels.
            num_classes: Output channels (labels including background).
            patch_size: Spatial patch size.
            batch_size: Samples per batch.
        """
        if batch_size < 1:
            raise PlanningError(f"Batch size must be at least 1, got {batch_size}.")
        single, double = self._traces(network_class_name, arch_kwargs, requires_import, input_channels,
                                      num_classes, patch_size)
        # Saved tensors and inputs grow linearly with the batch size, but gradients do not.
        events = [(kind, size_at_1 if kind == "gradient" else size_at_1 + (size_at_2 - size_at_1) * (batch_size - 1))
                  for (kind, size_at_1), (_, size_at_2) in zip(single.events, double.events)]
        inputs = single.inputs + (double.inputs - single.inputs) * (batch_size - 1)
        largest = max((size for kind, size in events if kind == "saved"), default=0)
        saved, gradients = backward_peak(events)
        workspace = int(self.workspace_factor * largest)
        # SGD with weight decay adds the decay term into a new list, so the step keeps two gradient copies in memory.
        step_gradients = 2 * single.parameters
        if step_gradients > saved + gradients + workspace:
            saved, gradients, workspace = 0, step_gradients, 0
        return MemoryEstimate(
            parameters=single.parameters,
            gradients=gradients,
            optimizer_state=single.parameters,
            inputs=inputs,
            activations=saved,
            workspace=workspace,
        )

    def max_batch_size(
        self,
        target_bytes: float,
        network_class_name: str,
        arch_kwargs: Mapping[str, Any],
        requires_import: Sequence[str],
        input_channels: int,
        num_classes: int,
        patch_size: Sequence[int],
    ) -> int:
        """Return the largest batch size whose estimated peak fits ``target_bytes`` (0 if not even one fits)."""
        args = (network_class_name, arch_kwargs, requires_import, input_channels, num_classes, patch_size)

        def fits(batch: int) -> bool:
            return self.estimate(*args, batch_size=batch).total <= target_bytes

        if not fits(1):
            return 0
        # The estimate grows with the batch size, so double until it no longer fits, then bisect.
        low, high = 1, 2
        while fits(high):
            low, high = high, high * 2
            if high > MAX_BATCH_SIZE:
                return MAX_BATCH_SIZE
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        return low

    def _traces(self, network_class_name, arch_kwargs, requires_import, input_channels, num_classes,
                patch_size) -> tuple[_Trace, _Trace]:
        key = json.dumps([network_class_name, arch_kwargs, list(requires_import), input_channels, num_classes,
                          [int(size) for size in patch_size]], sort_keys=True, default=str)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        network_class = pydoc.locate(network_class_name)
        if network_class is None:
            raise PlanningError(f"Network class {network_class_name!r} not found; check the dotted path.")
        kwargs = resolve_architecture(arch_kwargs, requires_import)

        def build() -> nn.Module:
            return network_class(input_channels=input_channels, num_classes=num_classes, deep_supervision=True,
                                 **kwargs)

        traces = tuple(trace_training_step(build, input_channels, patch_size, batch, self.precision)
                       for batch in (1, 2))
        if [kind for kind, _ in traces[0].events] != [kind for kind, _ in traces[1].events]:
            raise PlanningError(f"The forward pass of {network_class_name} differs between batch sizes 1 and 2; "
                                "the memory model needs a network whose layers do not depend on the batch size.")
        self._cache[key] = traces
        return traces
