"""Network topology for a patch: stages, strides, kernel sizes and the padded patch size.

The stage layout is nnU-Net's own (``get_pool_and_conv_props`` in nnunetv2 2.8.1): an axis is downsampled while
its feature map stays at least ``2 * min_edge`` long and its spacing is within a factor 2 of the finest axis.
Small images keep that layout, with one or two stages, because the plugin network and trainers support any stage
count. This module adds an explicit patch-shrinking step and log lines that report stage counts below three and
patches padded beyond the median image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nnunet_resenc_plugin.errors import PlanningError

logger = logging.getLogger(__name__)

# Shortest edge of the lowest-resolution feature map, as in nnU-Net's planners.
MIN_FEATURE_MAP_EDGE = 4


@dataclass(frozen=True)
class Topology:
    """Stage layout of a U-Net for one patch size.

    Attributes:
        patch_size: Patch size padded to a multiple of ``divisible_by`` per axis.
        strides: Per-stage stride per axis; the first stage has stride 1.
        kernel_sizes: Per-stage convolution kernel size per axis.
        divisible_by: Total stride per axis, which every patch edge must be a multiple of.
    """

    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        """Number of resolution stages."""
        return len(self.strides)

    def describe(self) -> str:
        """Return a one-line summary for the log."""
        return (f"patch {list(self.patch_size)}, {self.n_stages} stage(s), strides "
                f"{[list(s) for s in self.strides]}, kernels {[list(k) for k in self.kernel_sizes]}")


def compute_topology(spacing: Sequence[float], patch_size: Sequence[int],
                     min_edge: int = MIN_FEATURE_MAP_EDGE) -> Topology:
    """Compute nnU-Net's stage layout for ``patch_size`` at ``spacing``.

    Args:
        spacing: Voxel spacing per axis (after transposition).
        patch_size: Requested patch size; the result is padded to the total stride.
        min_edge: Shortest edge of the lowest-resolution feature map.

    Raises:
        PlanningError: If spacing or patch size have different lengths or non-positive entries.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    if len(spacing) != len(patch_size) or len(spacing) not in (2, 3):
        raise PlanningError(f"Spacing {list(spacing)} and patch size {list(patch_size)} must both have 2 or 3 "
                            "entries.")
    if min(spacing) <= 0 or min(patch_size) < 1:
        raise PlanningError(f"Spacing {list(spacing)} and patch size {list(patch_size)} must be positive.")
    _, strides, kernels, padded, divisible = get_pool_and_conv_props(
        list(spacing), list(patch_size), min_edge, 999999)
    return Topology(
        patch_size=tuple(int(size) for size in padded),
        strides=tuple(tuple(int(s) for s in stage) for stage in strides),
        kernel_sizes=tuple(tuple(int(k) for k in stage) for stage in kernels),
        divisible_by=tuple(int(d) for d in divisible),
    )


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float]) -> list[int]:
    """Return the starting patch of the shrinking loop: a large patch with the aspect ratio of 1 / spacing.

    The patch contains 256**3 voxels in 3D and 2048**2 pixels in 2D (nnU-Net's starting volume), and is then clipped
    to the median image shape, so it never starts larger than a typical image.
    """
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    volume = 256.0**3 if len(spacing) == 3 else 2048.0**2
    scale = (volume / np.prod(inverse)) ** (1.0 / len(spacing))
    patch = [int(round(value)) for value in inverse * scale]
    return [max(1, min(size, int(round(median)))) for size, median in zip(patch, median_shape)]


def shrink_patch(topology: Topology, spacing: Sequence[float], median_shape: Sequence[float],
                 min_edge: int = MIN_FEATURE_MAP_EDGE) -> Topology | None:
    """Make the patch one step smaller along the axis that is largest relative to the median image shape.

    The step is the axis' total stride after the cut, so the result stays divisible and no valid size is
    skipped. Returns None when no axis can shrink any more.
    """
    ratios = [size / max(median, 1.0) for size, median in zip(topology.patch_size, median_shape)]
    for axis in np.argsort(ratios)[::-1]:
        axis = int(axis)
        if topology.patch_size[axis] <= min_edge:
            continue
        trial = list(topology.patch_size)
        trial[axis] -= topology.divisible_by[axis]
        if trial[axis] < 1:
            continue
        step = compute_topology(spacing, trial, min_edge).divisible_by[axis]
        smaller = list(topology.patch_size)
        smaller[axis] = max(1, smaller[axis] - step)
        result = compute_topology(spacing, smaller, min_edge)
        if math.prod(result.patch_size) < math.prod(topology.patch_size):
            return result
    return None


def log_topology_choice(topology: Topology, median_shape: Sequence[float], configuration: str) -> None:
    """Log a patch padded beyond the median image, and how a network with fewer than 3 stages will train."""
    median = [int(round(size)) for size in median_shape]
    if any(patch > size for patch, size in zip(topology.patch_size, median)):
        logger.info("%s: patch %s is larger than the median image %s, because each axis must be a multiple of its "
                    "total stride %s; nnU-Net pads the samples to the patch.", configuration,
                    list(topology.patch_size), median, list(topology.divisible_by))
    if topology.n_stages >= 3:
        return
    # One output per decoder stage; a one-stage network has no decoder stage and returns its single output.
    outputs = max(1, topology.n_stages - 1)
    logger.info(
        "%s: median image %s allows only %d stage(s) (an axis is downsampled only while it stays >= %d voxels "
        "long). The network gets %d deep-supervision output(s); the plugin trainers weight them so the loss "
        "stays finite.", configuration, median, topology.n_stages, 2 * MIN_FEATURE_MAP_EDGE, outputs)
