"""Tests that invalid ResEncUNet arguments and inputs raise NetworkConfigError naming the bad value."""

from __future__ import annotations

import pytest
import torch

from nnunet_resenc_plugin.errors import NetworkConfigError, ResEncPluginError
from nnunet_resenc_plugin.networks import ResEncUNet

from test_network import build, tiny_kwargs


@pytest.mark.parametrize(
    ("overrides", "expected_fragments"),
    [
        ({"features_per_stage": [4, 8]}, ["features_per_stage=[4, 8]", "needs 3"]),
        ({"n_blocks_per_stage": [1, 1, 1, 1]}, ["n_blocks_per_stage", "needs 3"]),
        ({"n_conv_per_stage_decoder": [1, 1, 1]}, ["n_conv_per_stage_decoder", "needs 2"]),
        ({"kernel_sizes": [3, 3]}, ["kernel_sizes", "one entry per stage (3)"]),
        ({"kernel_sizes": [[3, 3], 3, 3]}, ["kernel_sizes[0]=[3, 3]", "3 ints"]),
        ({"kernel_sizes": [3, 4, 3]}, ["even sizes", "[4, 4, 4]"]),
        ({"strides": [2, 2, 2]}, ["strides[0]=[2, 2, 2]", "all ones"]),
        ({"strides": [1, 0, 2]}, ["strides[1]=0", ">= 1"]),
        ({"n_stages": 0}, ["n_stages=0"]),
        ({"norm_op": "layer"}, ["norm_op='layer'", "'batch'", "'group'", "'instance'", "dotted path"]),
        ({"norm_op": "torch.nn.BatchNorm2d"}, ["BatchNorm2d", "2D", "3D"]),
        ({"norm_op": "torch.nn.NoSuchNorm"}, ["torch.nn.NoSuchNorm", "dotted path"]),
        ({"norm_op_kwargs": {"epsilon": 1e-5}}, ["norm_op_kwargs", "epsilon"]),
        ({"norm_op": "group", "norm_op_kwargs": {"num_groups": 3}}, ["num_groups=3", "4 channels"]),
        ({"conv_op": "torch.nn.Linear"}, ["conv_op='torch.nn.Linear'", "Conv3d"]),
        ({"nonlin": "torch.nn.functional.relu"}, ["nonlin", "torch.nn.Module subclass"]),
        ({"nonlin_kwargs": {"slope": 0.1}}, ["nonlin_kwargs", "slope"]),
        ({"block": "wide"}, ["block='wide'", "'basic'", "'bottleneck'"]),
        ({"downsampling": "stride"}, ["downsampling='stride'", "'conv'", "'max_pool'", "'avg_pool'"]),
        ({"shortcut": "identity"}, ["shortcut='identity'", "'avg_pool_conv'", "'conv'"]),
        ({"stochastic_depth": 1.0}, ["stochastic_depth=1.0", "[0, 1)"]),
        ({"squeeze_excitation": True, "squeeze_excitation_reduction": 0.0}, ["squeeze_excitation_reduction=0.0"]),
        ({"stem_channels": 0}, ["stem_channels=0"]),
        ({"bottleneck_channels": [1, 2]}, ["bottleneck_channels", "needs 3"]),
    ],
)
def test_bad_argument_raises(overrides, expected_fragments):
    with pytest.raises(NetworkConfigError) as info:
        build(3, **overrides)

    message = str(info.value)
    for fragment in expected_fragments:
        assert fragment in message


@pytest.mark.parametrize(("name", "value"), [("input_channels", 0), ("num_classes", True)])
def test_bad_channel_count_raises(name, value):
    kwargs = {"input_channels": 1, "num_classes": 2, name: value}
    with pytest.raises(NetworkConfigError, match=name):
        ResEncUNet(**kwargs, **tiny_kwargs(2))


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        build(2, block="wide")
    assert issubclass(NetworkConfigError, ResEncPluginError)


def test_input_not_divisible_raises_before_compute():
    network = build(3)

    with pytest.raises(NetworkConfigError) as info:
        network(torch.randn(1, 2, 16, 18, 16))

    assert "[16, 18, 16]" in str(info.value)
    assert "[4, 4, 4]" in str(info.value)


def test_wrong_input_channels_raises():
    network = build(2, input_channels=2)

    with pytest.raises(NetworkConfigError, match="3 channels.*input_channels=2"):
        network(torch.randn(1, 3, 16, 16))


def test_wrong_input_rank_raises():
    network = build(3)

    with pytest.raises(NetworkConfigError, match="expects 5"):
        network(torch.randn(1, 2, 16, 16))


def test_feature_map_size_wrong_rank_raises():
    network = build(3)

    with pytest.raises(NetworkConfigError, match="input_size"):
        network.compute_conv_feature_map_size((1, 2, 16, 16, 16))
