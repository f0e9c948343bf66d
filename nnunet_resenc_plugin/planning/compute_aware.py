"""Compute-aware planning: pick the patch and batch size that fit a time budget per training iteration.

nnU-Net plans by GPU memory alone. On a CPU or a small GPU the memory-optimal plan can take a minute per
iteration. This mode times real training steps of candidate (patch, batch) pairs on the target device and keeps
the largest plan whose measured time fits the budget, never exceeding the memory plan.
"""

from __future__ import annotations

import logging
import math
import pydoc
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from nnunet_resenc_plugin.errors import PlanningError
from nnunet_resenc_plugin.planning.memory import MemoryModel, resolve_architecture
from nnunet_resenc_plugin.planning.topology import Topology, shrink_patch

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
# Budget used when a device is given without one: 250 iterations (one nnU-Net epoch) in about 20 minutes.
DEFAULT_SECONDS_PER_ITERATION = 5.0
# Accept a measured time up to this factor over the budget, because step times jitter by a few percent.
TIME_TOLERANCE = 1.1
# Timed steps per measurement after a warm-up step. The fastest one counts.
TIMED_REPEATS = 2
# Upper bound on timed patch sizes, so a planner run stays within minutes on slow devices.
MAX_TIMED_TOPOLOGIES = 8


def resolve_precision(device: str) -> str:
    """Return the precision that the plugin trainers use on ``device``.

    CUDA trains with nnU-Net's float16 autocast. The CPU trains in float32 unless the plugin trainers enable
    bfloat16 autocast there (see ``nnunet_resenc_plugin.training.precision``).
    """
    if device == "cuda":
        return "fp16"
    try:
        from nnunet_resenc_plugin.training.precision import use_cpu_bf16
    except ImportError:
        return "fp32"
    return "bf16" if use_cpu_bf16(torch.device("cpu")) else "fp32"


@dataclass(frozen=True)
class ComputeBudget:
    """Time budget of the compute-aware mode.

    Attributes:
        device: ``cpu`` or ``cuda``, where candidate steps are timed.
        seconds_per_iteration: Longest accepted time of one training iteration.
    """

    device: str
    seconds_per_iteration: float

    @classmethod
    def from_options(cls, device: str | None, seconds_per_iteration: float | None) -> "ComputeBudget | None":
        """Build a budget from the planner options, or return None when neither option is given.

        Raises:
            PlanningError: On an unknown device, a CUDA device that is not available, or a non-positive budget.
        """
        if device is None and seconds_per_iteration is None:
            return None
        device = device or "cpu"
        if device not in DEVICES:
            raise PlanningError(f"Unknown device {device!r}. Valid devices: {', '.join(DEVICES)}.")
        if device == "cuda" and not torch.cuda.is_available():
            raise PlanningError("Device 'cuda' requested, but PyTorch finds no CUDA device. Use --device cpu.")
        seconds = DEFAULT_SECONDS_PER_ITERATION if seconds_per_iteration is None else float(seconds_per_iteration)
        if not seconds > 0:
            raise PlanningError(f"Seconds per iteration must be positive, got {seconds_per_iteration}.")
        return cls(device, seconds)

    def as_dict(self) -> dict[str, Any]:
        """Return the budget as a JSON-ready record for the plans."""
        return {"device": self.device, "seconds_per_iteration": self.seconds_per_iteration}

    def fit(
        self,
        topology: Topology,
        memory_batch_size: int,
        spacing: Sequence[float],
        median_shape: Sequence[float],
        input_channels: int,
        num_classes: int,
        make_arch_kwargs: Callable[[Topology], Mapping[str, Any]],
        memory_model: MemoryModel,
        target_bytes: float,
        precision: str,
        configuration: str,
    ) -> tuple[Topology, int]:
        """Shrink the memory plan until a batch of at least 2 fits the time budget.

        For each candidate patch, the step time is measured at batch size 2 and scaled in proportion to the
        largest batch within the budget, which is timed once more to confirm (and scaled down once if it is too
        slow). When batch 2 is too slow, the patch shrinks until its voxels fall by the factor the budget asks
        for (step time grows about linearly with the voxels), and the smaller patch is timed.

        Args:
            topology: Topology of the memory plan.
            memory_batch_size: Batch size of the memory plan; the result never exceeds it at the same patch.
            spacing: Voxel spacing of the configuration.
            median_shape: Median image shape of the configuration.
            input_channels: Image channels.
            num_classes: Output channels.
            make_arch_kwargs: Builds the architecture keyword arguments for a topology.
            memory_model: Memory model that bounds the batch size of smaller patches.
            target_bytes: Memory target in bytes.
            precision: Training precision used for timing.
            configuration: Configuration name for the log.

        Returns:
            The chosen topology and batch size.
        """
        from nnunet_resenc_plugin.planning.measure import time_training_steps
        from nnunet_resenc_plugin.planning.planner import NETWORK_CLASS_NAME, REQUIRES_IMPORT

        network_class = pydoc.locate(NETWORK_CLASS_NAME)
        budget = self.seconds_per_iteration
        candidate = topology
        for _ in range(MAX_TIMED_TOPOLOGIES):
            arch_kwargs = make_arch_kwargs(candidate)
            memory_limit = memory_batch_size if candidate == topology else memory_model.max_batch_size(
                target_bytes, NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, input_channels, num_classes,
                candidate.patch_size)
            kwargs = resolve_architecture(arch_kwargs, REQUIRES_IMPORT)

            def build(kwargs=kwargs):
                return network_class(input_channels=input_channels, num_classes=num_classes,
                                     deep_supervision=True, **kwargs)

            seconds_two = time_training_steps(build, input_channels, num_classes, candidate.patch_size, (2,),
                                              self.device, precision, repeats=TIMED_REPEATS)[2]
            # Assume time proportional to the batch. A fixed per-step cost makes the true per-sample time smaller,
            # so this errs towards smaller batches.
            batch = min(int(math.floor(budget / (seconds_two / 2))), max(memory_limit, 1))
            logger.info("%s: patch %s takes %.2f s per iteration at batch 2 on %s.", configuration,
                        list(candidate.patch_size), seconds_two, self.device)
            if batch >= 2:
                confirmed = seconds_two
                if batch > 2:
                    confirmed = time_training_steps(build, input_channels, num_classes, candidate.patch_size,
                                                    (batch,), self.device, precision)[batch]
                    if confirmed > budget * TIME_TOLERANCE:
                        scaled = max(2, int(batch * budget / confirmed))
                        confirmed = seconds_two if scaled == 2 else confirmed * scaled / batch
                        batch = scaled
                if confirmed <= budget * TIME_TOLERANCE:
                    logger.info("%s: compute-aware plan: patch %s, batch %d, about %.2f s per iteration on %s.",
                                configuration, list(candidate.patch_size), batch, confirmed, self.device)
                    return candidate, batch
            # Too slow at batch 2: shrink the patch by the voxel factor the budget requires.
            target_voxels = math.prod(candidate.patch_size) * budget / seconds_two
            smaller = candidate
            while math.prod(smaller.patch_size) > target_voxels:
                next_smaller = shrink_patch(smaller, spacing, median_shape)
                if next_smaller is None:
                    break
                smaller = next_smaller
            if smaller == candidate:
                break
            candidate = smaller
        logger.warning("%s: no timed candidate fits %.1f s per iteration on %s; keeping patch %s at batch 2.",
                       configuration, budget, self.device, list(candidate.patch_size))
        return candidate, 2
