"""Tests of state-dict conversion between dynamic-network-architectures' ResidualEncoderUNet and ResEncUNet."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from torch import nn

from nnunet_resenc_plugin.errors import CheckpointConversionError
from nnunet_resenc_plugin.networks import ResEncUNet
from nnunet_resenc_plugin.networks.conversion import (
    load_stock_state_dict,
    plugin_to_stock_state_dict,
    stock_to_plugin_state_dict,
)

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
SPATIAL = {2: (16, 24), 3: (16, 16, 8)}
STRIDES = {2: [[1, 1], [2, 2], [2, 2]], 3: [[1, 1, 1], [2, 2, 1], [2, 2, 2]]}
TOLERANCE = 1e-5


def stock_arguments(dim: int, block: str = "basic", dropout: bool = False) -> dict:
    """Return keyword arguments shared by both networks, in the form nnU-Net's ResEnc plans give them."""
    return dict(
        n_stages=3,
        features_per_stage=[8, 16, 16] if block == "bottleneck" else [4, 8, 16],
        conv_op=CONV[dim],
        kernel_sizes=[[3] * dim, [3] * dim, [1] + [3] * (dim - 1)],
        strides=STRIDES[dim],
        n_blocks_per_stage=[1, 2, 2],
        n_conv_per_stage_decoder=[2, 1],
        conv_bias=True,
        norm_op=NORM[dim],
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=DROPOUT[dim] if dropout else None,
        dropout_op_kwargs={"p": 0.2} if dropout else None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        bottleneck_channels=4 if block == "bottleneck" else None,
    )


def build_pair(dim: int, block: str = "basic", dropout: bool = False, num_classes: int = 3):
    """Build a stock network with randomised weights and a plugin network of the same configuration."""
    arguments = stock_arguments(dim, block, dropout)
    torch.manual_seed(0)
    stock = ResidualEncoderUNet(
        input_channels=2,
        num_classes=num_classes,
        deep_supervision=True,
        block=BottleneckD if block == "bottleneck" else BasicBlockD,
        **arguments,
    )
    stock.apply(stock.initialize)
    with torch.no_grad():
        # Zero-initialised norms would hide a wrong mapping of the residual branches.
        for parameter in stock.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))

    plugin = ResEncUNet(input_channels=2, num_classes=num_classes, deep_supervision=True, block=block, **arguments)
    return stock, plugin


def max_output_difference(first: nn.Module, second: nn.Module, dim: int) -> float:
    x = torch.randn(2, 2, *SPATIAL[dim], generator=torch.Generator().manual_seed(5))
    first.eval()
    second.eval()
    with torch.no_grad():
        first_outputs = first(x)
        second_outputs = second(x)
    assert len(first_outputs) == len(second_outputs)
    return max((a - b).abs().max().item() for a, b in zip(first_outputs, second_outputs))


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("dim", [2, 3])
def test_stock_to_plugin_outputs_match(dim, block, dropout):
    stock, plugin = build_pair(dim, block, dropout)

    converted = stock_to_plugin_state_dict(stock.state_dict(), reference=plugin)
    plugin.load_state_dict(converted, strict=True)

    assert max_output_difference(stock, plugin, dim) < TOLERANCE


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("dim", [2, 3])
def test_plugin_to_stock_outputs_match(dim, block, dropout):
    stock, plugin = build_pair(dim, block, dropout)
    with torch.no_grad():
        for parameter in plugin.parameters():
            parameter.normal_(0.0, 0.2)

    converted = plugin_to_stock_state_dict(plugin.state_dict(), reference=stock, with_dropout=dropout)
    stock.load_state_dict(converted, strict=True)

    assert max_output_difference(stock, plugin, dim) < TOLERANCE


def test_round_trip_restores_stock_state_dict():
    stock, _ = build_pair(3)
    original = stock.state_dict()

    round_trip = plugin_to_stock_state_dict(stock_to_plugin_state_dict(original))

    assert set(round_trip) == set(original)
    for key, tensor in original.items():
        assert torch.equal(round_trip[key], tensor), key


def test_conversion_drops_stock_duplicates():
    stock, plugin = build_pair(2)

    converted = stock_to_plugin_state_dict(stock.state_dict())

    assert not any("all_modules" in key or key.startswith("decoder.encoder.") for key in converted)
    assert set(converted) == set(plugin.state_dict())


def test_conversion_without_named_duplicates():
    stock, plugin = build_pair(3, dropout=True)
    positional_only = {
        key: tensor
        for key, tensor in stock.state_dict().items()
        if "all_modules" in key or not key.split(".")[-2] in ("conv", "norm") or "transpconvs" in key
        or "seg_layers" in key
    }

    plugin.load_state_dict(stock_to_plugin_state_dict(positional_only, reference=plugin), strict=True)

    assert max_output_difference(stock, plugin, 3) < TOLERANCE


def test_load_stock_state_dict_helper():
    stock, plugin = build_pair(2)

    load_stock_state_dict(plugin, stock.state_dict())

    assert max_output_difference(stock, plugin, 2) < TOLERANCE


def test_shape_mismatch_lists_each_key():
    stock, _ = build_pair(3, num_classes=3)
    _, plugin = build_pair(3, num_classes=5)

    with pytest.raises(CheckpointConversionError) as info:
        stock_to_plugin_state_dict(stock.state_dict(), reference=plugin)

    message = str(info.value)
    assert "decoder.seg_layers.0.weight: stock (3, 8, 1, 1, 1) -> plugin (5, 8, 1, 1, 1)" in message
    assert "decoder.seg_layers.1.bias: stock (3,) -> plugin (5,)" in message
    assert "4 problems" in message


def test_missing_and_unexpected_keys_listed():
    stock, plugin = build_pair(2)
    state = dict(stock.state_dict())
    for key in [key for key in state if ".seg_layers.1." in key]:
        del state[key]

    with pytest.raises(CheckpointConversionError) as info:
        stock_to_plugin_state_dict(state, reference=plugin)

    assert "missing key decoder.seg_layers.1.weight" in str(info.value)
    assert "missing key decoder.seg_layers.1.bias" in str(info.value)

    reference = {key: tensor for key, tensor in stock.state_dict().items() if ".seg_layers.1." not in key}
    with pytest.raises(CheckpointConversionError) as info:
        plugin_to_stock_state_dict(plugin.state_dict(), reference=reference)

    assert "unexpected key decoder.seg_layers.1.weight (shape (3, 4, 1, 1))" in str(info.value)
    assert "2 problems" in str(info.value)


def test_unmatched_key_raises():
    stock, _ = build_pair(2)
    state = dict(stock.state_dict())
    state["encoder.extra_head.weight"] = torch.zeros(3)

    expected = r"unmatched stock key encoder.extra_head.weight \(shape \(3,\)\)"
    with pytest.raises(CheckpointConversionError, match=expected):
        stock_to_plugin_state_dict(state)


def test_conflicting_duplicate_raises():
    stock, _ = build_pair(2)
    state = dict(stock.state_dict())
    key = "decoder.encoder.stem.convs.0.conv.weight"
    state[key] = state[key] + 1.0

    with pytest.raises(CheckpointConversionError, match="holds different values"):
        stock_to_plugin_state_dict(state)


def test_wrapper_prefix_hint():
    stock, _ = build_pair(2)
    wrapped = {"module." + key: tensor for key, tensor in stock.state_dict().items()}

    with pytest.raises(CheckpointConversionError, match="strip the prefix"):
        stock_to_plugin_state_dict(wrapped)


def test_plugin_to_stock_with_unstrided_stage():
    arguments = stock_arguments(2)
    arguments["strides"] = [[1, 1], [1, 1], [2, 2]]
    torch.manual_seed(0)
    stock = ResidualEncoderUNet(input_channels=2, num_classes=3, deep_supervision=True, **arguments)
    plugin = ResEncUNet(input_channels=2, num_classes=3, deep_supervision=True, **arguments)

    with pytest.raises(CheckpointConversionError, match="skip.0.conv.weight"):
        plugin_to_stock_state_dict(plugin.state_dict(), reference=stock)

    converted = plugin_to_stock_state_dict(plugin.state_dict(), reference=stock, strides=arguments["strides"])
    stock.load_state_dict(converted, strict=True)
    assert max_output_difference(stock, plugin, 2) < TOLERANCE


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "no_ds"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("dim", [2, 3])
def test_feature_map_size_matches_stock(dim, block, deep_supervision):
    stock, plugin = build_pair(dim, block)
    stock.decoder.deep_supervision = deep_supervision
    plugin.decoder.deep_supervision = deep_supervision
    patch = [2 * size for size in SPATIAL[dim]]

    expected = int(stock.compute_conv_feature_map_size(patch))
    actual = plugin.compute_conv_feature_map_size(patch)

    assert actual == expected
