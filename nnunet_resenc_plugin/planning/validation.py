"""Checks of an nnU-Net plans dictionary before anything trains on it.

``validate_plans`` works for the plugin network and for stock nnU-Net networks alike. It resolves
``inherits_from`` the way nnU-Net does (a shallow merge) and reports every problem of a configuration in one
``PlansValidationError``.
"""

from __future__ import annotations

import inspect
import math
import pydoc
from typing import Any, Mapping

from nnunet_resenc_plugin.errors import PlansValidationError

# Keyword arguments that nnU-Net passes itself, so they must not appear in arch_kwargs.
_PASSED_BY_NNUNET = ("input_channels", "num_classes", "deep_supervision")
# Per-stage list arguments and how many entries each needs, relative to n_stages.
_PER_STAGE = {
    "features_per_stage": 0,
    "kernel_sizes": 0,
    "strides": 0,
    "n_blocks_per_stage": 0,
    "n_conv_per_stage": 0,
    "n_conv_per_stage_decoder": -1,
    "bottleneck_channels": 0,
}


def resolve_configuration(plans: Mapping[str, Any], configuration: str) -> dict:
    """Return a configuration with its ``inherits_from`` parents merged in, as nnU-Net's PlansManager does.

    Raises:
        PlansValidationError: If the configuration or a parent is missing, or the inheritance loops.
    """
    configurations = plans.get("configurations", {})
    chain = []
    name = configuration
    while True:
        if name not in configurations:
            raise PlansValidationError(f"Configuration {name!r} not found in the plans. Available: "
                                       f"{', '.join(configurations) or 'none'}.")
        if name in chain:
            raise PlansValidationError(f"inherits_from loops in configuration {configuration!r}: {chain + [name]}.")
        chain.append(name)
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    merged: dict = {}
    for name in reversed(chain):
        merged.update(configurations[name])
    merged.pop("inherits_from", None)
    return merged


def _locate(path: Any) -> Any:
    return pydoc.locate(path) if isinstance(path, str) else None


def _check_architecture(name: str, config: Mapping[str, Any], problems: list[str]) -> None:
    architecture = config.get("architecture")
    if not isinstance(architecture, Mapping):
        problems.append("missing 'architecture' record; re-plan the dataset with nnU-Net 2.4 or later")
        return
    class_name = architecture.get("network_class_name")
    network_class = _locate(class_name)
    if network_class is None:
        problems.append(f"network_class_name {class_name!r} cannot be imported; check the dotted path and that "
                        "the package that defines it is installed")
    kwargs = architecture.get("arch_kwargs")
    if not isinstance(kwargs, Mapping):
        problems.append("architecture.arch_kwargs must be a dictionary")
        return
    for key in architecture.get("_kw_requires_import", []):
        if key not in kwargs:
            problems.append(f"_kw_requires_import lists {key!r}, which is not in arch_kwargs")
        elif kwargs[key] is not None and _locate(kwargs[key]) is None:
            problems.append(f"arch_kwargs[{key!r}] = {kwargs[key]!r} cannot be imported; use a dotted path such "
                            "as 'torch.nn.modules.conv.Conv3d'")
    for key in _PASSED_BY_NNUNET:
        if key in kwargs:
            problems.append(f"arch_kwargs must not contain {key!r}; nnU-Net passes it when it builds the network")
    if network_class is not None:
        _check_signature(network_class, kwargs, problems)
    _check_stage_lists(config, kwargs, problems)


def _check_signature(network_class: type, kwargs: Mapping[str, Any], problems: list[str]) -> None:
    parameters = inspect.signature(network_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name in parameters if name != "self"]
    for key in kwargs:
        if key not in accepted:
            problems.append(f"arch_kwargs[{key!r}] is not accepted by {network_class.__name__}; accepted "
                            f"arguments: {', '.join(a for a in accepted if a not in _PASSED_BY_NNUNET)}")
    for name, parameter in parameters.items():
        if (name != "self" and name not in _PASSED_BY_NNUNET and parameter.default is inspect.Parameter.empty
                and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                and name not in kwargs):
            problems.append(f"arch_kwargs lacks {name!r}, which {network_class.__name__} requires")


def _check_stage_lists(config: Mapping[str, Any], kwargs: Mapping[str, Any], problems: list[str]) -> None:
    n_stages = kwargs.get("n_stages")
    if not isinstance(n_stages, int) or isinstance(n_stages, bool) or n_stages < 1:
        problems.append(f"n_stages must be an integer >= 1, got {n_stages!r}")
        return
    for key, offset in _PER_STAGE.items():
        value = kwargs.get(key)
        if isinstance(value, (list, tuple)) and len(value) != n_stages + offset:
            problems.append(f"{key} has {len(value)} entries but n_stages = {n_stages} needs "
                            f"{n_stages + offset}")

    patch_size = config.get("patch_size")
    dimension = len(patch_size) if isinstance(patch_size, (list, tuple)) else None
    strides = kwargs.get("strides")
    if isinstance(strides, (list, tuple)) and strides:
        per_axis = [s if isinstance(s, (list, tuple)) else [s] * (dimension or 1) for s in strides]
        if any(int(s) != 1 for s in per_axis[0]):
            problems.append(f"the first stride must be all 1, got {list(per_axis[0])}; the first stage works at "
                            "full resolution")
        if dimension is not None:
            for index, stride in enumerate(per_axis):
                if len(stride) != dimension:
                    problems.append(f"strides[{index}] = {list(stride)} has {len(stride)} axes but the patch has "
                                    f"{dimension}")
                    return
            total = [math.prod(int(stage[axis]) for stage in per_axis) for axis in range(dimension)]
            bad = [axis for axis in range(dimension) if int(patch_size[axis]) % total[axis] != 0]
            if bad:
                problems.append(f"patch_size {list(patch_size)} is not divisible by the total stride {total} on "
                                f"axis {bad}; use a multiple of the total stride per axis")
    kernels = kwargs.get("kernel_sizes")
    if dimension is not None and isinstance(kernels, (list, tuple)):
        for index, kernel in enumerate(kernels):
            if isinstance(kernel, (list, tuple)) and len(kernel) != dimension:
                problems.append(f"kernel_sizes[{index}] = {list(kernel)} has {len(kernel)} axes but the patch has "
                                f"{dimension}")


def _check_training_fields(config: Mapping[str, Any], problems: list[str]) -> None:
    patch_size = config.get("patch_size")
    if not isinstance(patch_size, (list, tuple)) or len(patch_size) not in (2, 3) or \
            not all(isinstance(s, int) and s >= 1 for s in patch_size):
        problems.append(f"patch_size must be 2 or 3 positive integers, got {patch_size!r}")
    batch_size = config.get("batch_size")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        problems.append(f"batch_size must be a positive integer, got {batch_size!r}")
    spacing = config.get("spacing")
    if isinstance(patch_size, (list, tuple)) and isinstance(spacing, (list, tuple)) and \
            len(spacing) != len(patch_size):
        problems.append(f"spacing {list(spacing)} and patch_size {list(patch_size)} have different lengths")


def validate_plans(plans: Mapping[str, Any], configuration: str | None = None) -> None:
    """Check a plans dictionary and raise one error that lists every problem found.

    Checked: per-stage list lengths against ``n_stages``, a first stride of 1, a patch divisible by the total
    stride per axis, kernel and stride ranks against the patch, arch kwargs the network class does not accept
    or requires, dotted paths that cannot be imported, and positive batch and patch sizes.

    Args:
        plans: Plans as loaded from the JSON file.
        configuration: Configuration to check; None checks every configuration.

    Raises:
        PlansValidationError: If any check fails.
    """
    if not isinstance(plans, Mapping) or not isinstance(plans.get("configurations"), Mapping):
        raise PlansValidationError("The plans have no 'configurations' dictionary; pass an nnU-Net plans file.")
    names = [configuration] if configuration is not None else list(plans["configurations"])
    report = []
    for name in names:
        config = resolve_configuration(plans, name)
        problems: list[str] = []
        _check_training_fields(config, problems)
        _check_architecture(name, config, problems)
        report.extend(f"configuration {name!r}: {problem}" for problem in problems)
    if report:
        raise PlansValidationError("Invalid plans:\n- " + "\n- ".join(report))
