"""Check and expand the per-stage keyword arguments of `ResEncUNet` before any layer is built."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

from nnunet_resenc_plugin.errors import NetworkConfigError
from nnunet_resenc_plugin.networks.blocks import BLOCK_TYPES, SHORTCUT_TYPES
from nnunet_resenc_plugin.networks.encoder import BlockOptions, EncoderTopology
from nnunet_resenc_plugin.networks.layers import POOL_KINDS

DOWNSAMPLING_TYPES = ("conv",) + POOL_KINDS


def is_int(value: Any) -> bool:
    """Return whether `value` is an integer (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_list(value: Any) -> Any:
    """Turn tuples and NumPy arrays into lists, which planners may pass before the plans go through JSON."""
    if hasattr(value, "tolist") and not is_int(value):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _check_choice(argument: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise NetworkConfigError(f"{argument}={value!r} is not supported. Allowed: {', '.join(map(repr, allowed))}.")
    return value


def expand_per_stage(argument: str, value: Any, n_entries: int, minimum: int) -> tuple[int, ...]:
    """Expand an int to `n_entries` copies, or check a list of ints, every entry at least `minimum`.

    Args:
        argument: Keyword argument name, for error messages.
        value: An int or a sequence of ints.
        n_entries: Required number of entries.
        minimum: Smallest allowed entry.

    Returns:
        A tuple of `n_entries` ints.

    Raises:
        NetworkConfigError: wrong length, a non-int entry or an entry below `minimum`.
    """
    values = [value] * n_entries if is_int(value) else _as_list(value)
    if not isinstance(values, list) or not all(is_int(entry) for entry in values):
        raise NetworkConfigError(f"{argument}={value!r} must be an int or a list of {n_entries} ints.")
    if len(values) != n_entries:
        raise NetworkConfigError(
            f"{argument}={value!r} has {len(values)} entries but needs {n_entries}. Give one entry per stage "
            f"(n_conv_per_stage_decoder: one per stage except the deepest) or a single int."
        )
    if any(entry < minimum for entry in values):
        raise NetworkConfigError(
            f"{argument}={value!r} has an entry below {minimum}. Every entry must be >= {minimum}."
        )
    return tuple(int(entry) for entry in values)


def expand_per_axis(argument: str, value: Any, n_stages: int, dim: int) -> tuple[tuple[int, ...], ...]:
    """Expand kernel sizes or strides to one per-axis tuple per stage.

    Args:
        argument: Keyword argument name, for error messages.
        value: An int (all stages, all axes), or a list with one entry per stage, each an int or a list of
            `dim` ints.
        n_stages: Number of stages.
        dim: Number of spatial axes.

    Returns:
        `n_stages` tuples of `dim` positive ints.

    Raises:
        NetworkConfigError: wrong number of stages or axes, or a non-positive entry.
    """
    per_stage = [value] * n_stages if is_int(value) else _as_list(value)
    if not isinstance(per_stage, list) or len(per_stage) != n_stages:
        raise NetworkConfigError(
            f"{argument}={value!r} must have one entry per stage ({n_stages}), each an int or a list of {dim} ints."
        )

    expanded = []
    for stage, entry in enumerate(per_stage):
        axes = [entry] * dim if is_int(entry) else _as_list(entry)
        if not isinstance(axes, list) or len(axes) != dim or not all(is_int(axis) for axis in axes):
            raise NetworkConfigError(
                f"{argument}[{stage}]={entry!r} must be an int or a list of {dim} ints, one per spatial axis of "
                f"the {dim}D conv_op."
            )
        if any(axis < 1 for axis in axes):
            raise NetworkConfigError(f"{argument}[{stage}]={entry!r} has a non-positive entry. Use values >= 1.")
        expanded.append(tuple(int(axis) for axis in axes))
    return tuple(expanded)


def build_topology(
    n_stages: Any,
    dim: int,
    features_per_stage: Any,
    kernel_sizes: Any,
    strides: Any,
    n_blocks_per_stage: Any,
    block: str,
    bottleneck_channels: Any,
    stem_channels: Any,
) -> EncoderTopology:
    """Check the per-stage arguments of `ResEncUNet` and return the expanded encoder topology.

    Bottleneck blocks default to a quarter of the stage's features (at least one channel) when
    `bottleneck_channels` is None.

    Raises:
        NetworkConfigError: any invalid argument; the message names the value and the fix.
    """
    if not is_int(n_stages) or n_stages < 1:
        raise NetworkConfigError(f"n_stages={n_stages!r} must be an int >= 1.")
    n_stages = int(n_stages)

    features = expand_per_stage("features_per_stage", features_per_stage, n_stages, 1)
    kernels = expand_per_axis("kernel_sizes", kernel_sizes, n_stages, dim)
    stride_list = expand_per_axis("strides", strides, n_stages, dim)
    blocks = expand_per_stage("n_blocks_per_stage", n_blocks_per_stage, n_stages, 1)

    if any(axis != 1 for axis in stride_list[0]):
        raise NetworkConfigError(
            f"strides[0]={list(stride_list[0])} must be all ones because the first stage works at the input "
            f"resolution. "
            f"Prepend a stage with stride {[1] * dim} or move this stride to the next stage."
        )
    even_kernels = [list(kernel) for kernel in kernels if any(axis % 2 == 0 for axis in kernel)]
    if even_kernels:
        raise NetworkConfigError(
            f"kernel_sizes {even_kernels} contain even sizes; use odd sizes (1, 3, 5, ...) so that padding keeps "
            f"the spatial size."
        )

    _check_choice("block", block, BLOCK_TYPES)
    if bottleneck_channels is None:
        bottlenecks = tuple(max(1, feature // 4) for feature in features)
    else:
        bottlenecks = expand_per_stage("bottleneck_channels", bottleneck_channels, n_stages, 1)

    if stem_channels is None:
        stem = features[0]
    elif is_int(stem_channels) and stem_channels >= 1:
        stem = int(stem_channels)
    else:
        raise NetworkConfigError(f"stem_channels={stem_channels!r} must be None or an int >= 1.")

    return EncoderTopology(
        features_per_stage=features,
        kernel_sizes=kernels,
        strides=stride_list,
        n_blocks_per_stage=blocks,
        bottleneck_channels=bottlenecks,
        stem_channels=stem,
    )


def build_block_options(
    block: str,
    downsampling: str,
    shortcut: str,
    squeeze_excitation: bool,
    squeeze_excitation_reduction: float,
    stochastic_depth: float,
    zero_init_residual: bool,
) -> BlockOptions:
    """Check the residual block options of `ResEncUNet`.

    Raises:
        NetworkConfigError: an unknown name or a value out of range.
    """
    _check_choice("block", block, BLOCK_TYPES)
    _check_choice("downsampling", downsampling, DOWNSAMPLING_TYPES)
    _check_choice("shortcut", shortcut, SHORTCUT_TYPES)
    if not 0.0 <= float(stochastic_depth) < 1.0:
        raise NetworkConfigError(f"stochastic_depth={stochastic_depth!r} must be in [0, 1).")
    if squeeze_excitation and not 0.0 < float(squeeze_excitation_reduction) <= 1.0:
        raise NetworkConfigError(
            f"squeeze_excitation_reduction={squeeze_excitation_reduction!r} must be in (0, 1], the fraction of "
            f"channels kept in the excitation bottleneck (0.0625 keeps 1/16)."
        )

    return BlockOptions(
        block=block,
        downsampling=downsampling,
        shortcut=shortcut,
        squeeze_excitation_reduction=float(squeeze_excitation_reduction) if squeeze_excitation else None,
        stochastic_depth=float(stochastic_depth),
        zero_init_residual=bool(zero_init_residual),
    )


def total_strides(strides: Sequence[Sequence[int]]) -> list[int]:
    """Return the product of the per-axis strides over all stages."""
    totals = [1] * len(strides[0])
    for stride in strides:
        totals = [total * step for total, step in zip(totals, stride)]
    return totals
