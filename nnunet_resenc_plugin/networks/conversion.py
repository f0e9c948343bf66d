"""Convert state dicts between dynamic-network-architectures' `ResidualEncoderUNet` and `ResEncUNet`.

The two networks compute the same function when `ResEncUNet` uses its stock-equivalent options (basic or
bottleneck blocks, `shortcut="avg_pool_conv"`, `downsampling="conv"`); only the parameter names differ. The
stock state dict also stores every parameter twice: once under a layer's name (`conv1.conv.weight`) and once
under its position in the layer's `all_modules` sequence (`conv1.all_modules.0.weight`), and the decoder
repeats the whole encoder under `decoder.encoder.`. Conversion maps names, drops those duplicates
(`stock_to_plugin_state_dict`) or recreates them (`plugin_to_stock_state_dict`); tensors are not copied.

Example:
    >>> plugin_net.load_state_dict(stock_to_plugin_state_dict(stock_net.state_dict(), reference=plugin_net))
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.errors import CheckpointConversionError

_PARAM = r"(?P<param>[A-Za-z_]+)"

# Pairs of (stock name, plugin name) with named placeholders. Each side becomes a regex on one direction and a
# format template on the other, so one table drives both conversions.
_NAME_PAIRS = (
    ("encoder.stem.convs.0.{layer}.{param}", "encoder.stem.{layer}.{param}"),
    (
        "encoder.stages.{stage}.blocks.{block}.{conv}.{layer}.{param}",
        "encoder.stages.{stage}.blocks.{block}.{conv}.{layer}.{param}",
    ),
    (
        "encoder.stages.{stage}.blocks.{block}.skip.{skip_index}.{layer}.{param}",
        "encoder.stages.{stage}.blocks.{block}.shortcut.{layer}.{param}",
    ),
    ("decoder.transpconvs.{stage}.{param}", "decoder.stages.{stage}.upsample.{param}"),
    ("decoder.stages.{stage}.convs.{index}.{layer}.{param}", "decoder.stages.{stage}.convs.{index}.{layer}.{param}"),
    ("decoder.seg_layers.{stage}.{param}", "decoder.seg_layers.{stage}.{param}"),
)
_GROUP_PATTERNS = {
    "layer": r"(?P<layer>conv|norm)",
    "conv": r"(?P<conv>conv[123])",
    "param": _PARAM,
    "stage": r"(?P<stage>\d+)",
    "block": r"(?P<block>\d+)",
    "index": r"(?P<index>\d+)",
    "skip_index": r"(?P<skip_index>\d+)",
}
_STOCK_ALIAS = re.compile(r"^(?P<layer_path>.+)\.all_modules\.(?P<position>\d+)\.(?P<param>[A-Za-z_]+)$")
_STOCK_DECODER_ENCODER = "decoder.encoder."
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, group in _GROUP_PATTERNS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile(f"^{pattern}$")


_STOCK_TO_PLUGIN = [(_compile(stock), plugin) for stock, plugin in _NAME_PAIRS]
_PLUGIN_TO_STOCK = [(_compile(plugin), stock) for stock, plugin in _NAME_PAIRS]


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]], **extra: str) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match is not None:
            return template.format(**match.groupdict(), **extra)
    return None


def _wrapper_hint(keys: Sequence[str]) -> str:
    prefixes = sorted({prefix for key in keys for prefix in _WRAPPER_PREFIXES if key.startswith(prefix)})
    if not prefixes:
        return ""
    return (
        f" Keys start with {prefixes}: this state dict comes from a DDP or torch.compile wrapper; strip the "
        f"prefix (or save the unwrapped module's state dict) first."
    )


def _merge_alias(
    merged: dict[str, torch.Tensor], key: str, tensor: torch.Tensor, source: str, errors: list[str]
) -> None:
    """Store `tensor` under `key` unless an equal tensor is already there; record a conflict otherwise."""
    if key not in merged:
        merged[key] = tensor
    elif _shape(merged[key]) != _shape(tensor) or not torch.equal(merged[key], tensor):
        errors.append(f"{source} duplicates {key} but holds different values")


def _canonical_stock_entries(state_dict: Mapping[str, torch.Tensor], errors: list[str]) -> dict[str, torch.Tensor]:
    """Fold the stock duplicates (`all_modules.N`, `decoder.encoder.`) into one entry per named parameter."""
    merged: dict[str, torch.Tensor] = {}
    aliases: list[tuple[str, str, torch.Tensor]] = []
    for key, tensor in state_dict.items():
        canonical = key[len("decoder."):] if key.startswith(_STOCK_DECODER_ENCODER) else key
        alias = _STOCK_ALIAS.match(canonical)
        if alias is not None:
            # Position 0 of `all_modules` is always the conv; the only other entry with tensors is the norm.
            layer = "conv" if alias["position"] == "0" else "norm"
            aliases.append((f"{alias['layer_path']}.{layer}.{alias['param']}", key, tensor))
        elif canonical != key:
            aliases.append((canonical, key, tensor))
        else:
            merged[key] = tensor

    for canonical, source, tensor in aliases:
        _merge_alias(merged, canonical, tensor, source, errors)
    return merged


def _reference_state(reference: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return reference.state_dict() if isinstance(reference, nn.Module) else reference


def _compare_with_reference(
    converted: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    converted_side: str,
    errors: list[str],
) -> None:
    """Record missing keys, unexpected keys and shape mismatches of `converted` against `reference`."""
    for key in reference:
        if key not in converted:
            errors.append(f"missing key {key} (reference shape {_shape(reference[key])})")
    for key in converted:
        if key not in reference:
            errors.append(f"unexpected key {key} (shape {_shape(converted[key])})")
    for key in [key for key in reference if key in converted]:
        if _shape(converted[key]) == _shape(reference[key]):
            continue
        if converted_side == "plugin":
            stock_shape, plugin_shape = _shape(converted[key]), _shape(reference[key])
        else:
            stock_shape, plugin_shape = _shape(reference[key]), _shape(converted[key])
        errors.append(f"{key}: stock {stock_shape} -> plugin {plugin_shape}")


def _raise_if_errors(errors: list[str], direction: str, keys: Sequence[str]) -> None:
    if not errors:
        return
    listing = "\n  ".join(errors)
    raise CheckpointConversionError(
        f"Cannot convert the state dict {direction} ({len(errors)} problems):\n  {listing}\n"
        f"Build the target network with the same plans configuration as the checkpoint (stages, features, "
        f"blocks per stage, kernel sizes, strides, number of classes) and the stock-equivalent options "
        f"(shortcut='avg_pool_conv', downsampling='conv').{_wrapper_hint(keys)}"
    )


def stock_to_plugin_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    reference: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Convert a dynamic-network-architectures `ResidualEncoderUNet` state dict for `ResEncUNet`.

    Args:
        state_dict: State dict of the stock network (for an nnU-Net checkpoint, `checkpoint["network_weights"]`).
        reference: Optional target `ResEncUNet` or its state dict; when given, missing keys, unexpected keys and
            shape mismatches are reported too.

    Returns:
        A state dict for `ResEncUNet.load_state_dict`, sharing tensors with `state_dict`.

    Raises:
        CheckpointConversionError: keys that no rule matches, duplicates with different values, or (with
            `reference`) each missing or unexpected key and each shape mismatch as `key: stock shape -> plugin
            shape`.
    """
    errors: list[str] = []
    canonical = _canonical_stock_entries(state_dict, errors)

    converted: dict[str, torch.Tensor] = OrderedDict()
    for key, tensor in canonical.items():
        new_key = _rename(key, _STOCK_TO_PLUGIN)
        if new_key is None:
            errors.append(f"unmatched stock key {key} (shape {_shape(tensor)})")
        else:
            converted[new_key] = tensor

    if reference is not None:
        _compare_with_reference(converted, _reference_state(reference), "plugin", errors)
    _raise_if_errors(errors, "from stock ResidualEncoderUNet to ResEncUNet", list(state_dict))
    return converted


def _is_strided_block(stage: int, block: int, strides: Sequence[Sequence[int]] | None) -> bool:
    if block != 0:
        return False
    if strides is None:
        # nnU-Net topologies downsample in every stage after the first.
        return stage > 0
    return any(step != 1 for step in ([strides[stage]] if isinstance(strides[stage], int) else strides[stage]))


def _dropout_layer_paths(keys: Sequence[str]) -> re.Pattern[str]:
    """Match the stock layer paths that hold a dropout when the stock network was built with `dropout_op`."""
    bottleneck = any(re.search(r"\.blocks\.\d+\.conv3\.", key) for key in keys)
    block_conv = "conv2" if bottleneck else "conv1"
    paths = (
        r"encoder\.stem\.convs\.0",
        rf"encoder\.stages\.\d+\.blocks\.\d+\.{block_conv}",
        r"decoder\.stages\.\d+\.convs\.\d+",
    )
    return re.compile("^(" + "|".join(paths) + ")$")


def plugin_to_stock_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    reference: nn.Module | Mapping[str, torch.Tensor] | None = None,
    *,
    strides: Sequence[Sequence[int] | int] | None = None,
    with_dropout: bool = False,
) -> dict[str, torch.Tensor]:
    """Convert a `ResEncUNet` state dict (stock-equivalent options) for dynamic-network-architectures' network.

    Args:
        state_dict: State dict of the plugin network.
        reference: Optional target `ResidualEncoderUNet` or its state dict; when given, missing keys, unexpected
            keys and shape mismatches are reported too.
        strides: Per-stage strides of the network. By default every stage after the first counts as strided,
            as nnU-Net plans it, so pass the strides only when a later stage has stride 1 on every axis.
        with_dropout: Whether the stock network was built with a `dropout_op`, which shifts the position of
            the norm inside the stock `all_modules` sequences.

    Returns:
        A state dict for `ResidualEncoderUNet.load_state_dict`, with the stock duplicate keys.

    Raises:
        CheckpointConversionError: keys that no rule matches, or (with `reference`) each missing or unexpected
            key and each shape mismatch as `key: stock shape -> plugin shape`.
    """
    errors: list[str] = []
    dropout_paths = _dropout_layer_paths(list(state_dict)) if with_dropout else None

    renamed: dict[str, torch.Tensor] = OrderedDict()
    for key, tensor in state_dict.items():
        match = re.match(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.shortcut\.", key)
        skip_index = "1" if match and _is_strided_block(int(match[1]), int(match[2]), strides) else "0"
        new_key = _rename(key, _PLUGIN_TO_STOCK, skip_index=skip_index)
        if new_key is None:
            errors.append(f"unmatched plugin key {key} (shape {_shape(tensor)})")
        else:
            renamed[new_key] = tensor

    converted: dict[str, torch.Tensor] = OrderedDict()
    for key, tensor in renamed.items():
        converted[key] = tensor
        layer = re.match(r"^(?P<layer_path>.+)\.(?P<layer>conv|norm)\.(?P<param>[A-Za-z_]+)$", key)
        if layer is None:
            continue
        position = 0
        if layer["layer"] == "norm":
            has_dropout = dropout_paths is not None and dropout_paths.match(layer["layer_path"]) is not None
            position = 2 if has_dropout else 1
        converted[f"{layer['layer_path']}.all_modules.{position}.{layer['param']}"] = tensor

    for key in [key for key in converted if key.startswith("encoder.")]:
        converted["decoder." + key] = converted[key]

    if reference is not None:
        _compare_with_reference(converted, _reference_state(reference), "stock", errors)
    _raise_if_errors(errors, "from ResEncUNet to stock ResidualEncoderUNet", list(state_dict))
    return converted


def load_stock_state_dict(network: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Convert a stock `ResidualEncoderUNet` state dict and load it into `network` (a `ResEncUNet`), strictly.

    Raises:
        CheckpointConversionError: see `stock_to_plugin_state_dict`.
    """
    network.load_state_dict(stock_to_plugin_state_dict(state_dict, reference=network), strict=True)
