"""Tests of ResEncUNet: option grid, gradients, deep supervision, initialisation, pickling and the nnU-Net contract."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from nnunet_resenc_plugin.networks import ResEncUNet
from nnunet_resenc_plugin.networks.blocks import BasicBlock, BottleneckBlock, DropPath, SqueezeExcitation

SPATIAL = {2: (16, 16), 3: (16, 16, 16)}
CONV = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}


def tiny_kwargs(dim: int, **overrides) -> dict:
    """Return arch kwargs of a three-stage network with 4 to 16 features."""
    kwargs = dict(
        n_stages=3,
        features_per_stage=[4, 8, 16],
        conv_op=CONV[dim],
        kernel_sizes=3,
        strides=[1, 2, 2],
        n_blocks_per_stage=[1, 2, 2],
        n_conv_per_stage_decoder=1,
        conv_bias=True,
        norm_op="instance",
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin="torch.nn.LeakyReLU",
        nonlin_kwargs={"inplace": True},
    )
    kwargs.update(overrides)
    return kwargs


def build(dim: int, deep_supervision: bool = True, input_channels: int = 2, num_classes: int = 3, **overrides):
    torch.manual_seed(0)
    return ResEncUNet(
        input_channels=input_channels,
        num_classes=num_classes,
        deep_supervision=deep_supervision,
        **tiny_kwargs(dim, **overrides),
    )


def as_list(output) -> list[torch.Tensor]:
    return output if isinstance(output, list) else [output]


def weighted_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Sum of outputs times fixed random weights, so no gradient cancels by symmetry."""
    generator = torch.Generator().manual_seed(1)
    return sum((out * torch.randn(out.shape, generator=generator)).sum() for out in outputs)


def check_gradients(network: nn.Module, require_nonzero: bool = True) -> None:
    """Check that every trainable parameter has a finite gradient and every conv weight a non-zero one.

    Squeeze-and-excitation weights are exempt from the non-zero check: at initialisation a hidden unit whose
    ReLU input is negative for every sample passes no gradient, which is expected behaviour.
    """
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        assert parameter.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        if require_nonzero and parameter.ndim > 1 and "squeeze_excitation" not in name:
            assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "no_ds"])
@pytest.mark.parametrize("downsampling", ["conv", "max_pool", "avg_pool"])
@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("dim", [2, 3])
def test_grid_forward_backward(dim, block, norm, downsampling, deep_supervision):
    network = build(
        dim, deep_supervision, block=block, norm_op=norm, downsampling=downsampling, norm_op_kwargs=None
    )
    x = torch.randn(2, 2, *SPATIAL[dim])

    outputs = network(x)

    if deep_supervision:
        assert isinstance(outputs, list)
        assert [tuple(out.shape) for out in outputs] == [
            (2, 3, *SPATIAL[dim]),
            (2, 3, *(size // 2 for size in SPATIAL[dim])),
        ]
    else:
        assert isinstance(outputs, torch.Tensor)
        assert tuple(outputs.shape) == (2, 3, *SPATIAL[dim])
    for out in as_list(outputs):
        assert torch.isfinite(out).all()

    weighted_loss(as_list(outputs)).backward()
    check_gradients(network)
    if not deep_supervision:
        for seg_layer in network.decoder.seg_layers[:-1]:
            assert all(parameter.grad is None for parameter in seg_layer.parameters())


@pytest.mark.parametrize(
    "options",
    [
        {"squeeze_excitation": True},
        {"squeeze_excitation": True, "block": "bottleneck", "squeeze_excitation_reduction": 0.5},
        {"stochastic_depth": 0.5},
        {"dropout_op": "torch.nn.Dropout", "dropout_op_kwargs": {"p": 0.2}},
        {"shortcut": "conv"},
        {"stem_channels": 6, "bottleneck_channels": [2, 3, 4], "block": "bottleneck"},
        {"conv_bias": False, "norm_op": None},
    ],
    ids=["se", "se_bottleneck", "drop_path", "dropout", "conv_shortcut", "stem_and_bottleneck", "no_norm"],
)
@pytest.mark.parametrize("dim", [2, 3])
def test_options_forward_backward(dim, options):
    network = build(dim, True, **options)
    network.train()
    x = torch.randn(2, 2, *SPATIAL[dim])

    outputs = network(x)

    assert tuple(outputs[0].shape) == (2, 3, *SPATIAL[dim])
    for out in outputs:
        assert torch.isfinite(out).all()
    weighted_loss(outputs).backward()
    # Drop path may zero a whole residual branch for every sample of the batch.
    check_gradients(network, require_nonzero="stochastic_depth" not in options)


def test_options_build_expected_layers():
    network = build(3, squeeze_excitation=True, stochastic_depth=0.3, dropout_op="torch.nn.Dropout3d",
                    dropout_op_kwargs={"p": 0.1})
    blocks = [module for module in network.modules() if isinstance(module, BasicBlock)]

    assert all(isinstance(block.squeeze_excitation, SqueezeExcitation) for block in blocks)
    rates = [block.drop_path.p for block in blocks]
    assert rates == pytest.approx([0.3 * (index + 1) / 5 for index in range(5)])
    assert all(isinstance(block.drop_path, DropPath) for block in blocks)
    assert isinstance(network.encoder.stem.dropout, nn.Dropout3d)
    assert isinstance(blocks[0].conv1.dropout, nn.Dropout3d)
    assert isinstance(blocks[0].conv2.dropout, nn.Identity)


def test_bottleneck_layout():
    network = build(2, block="bottleneck", bottleneck_channels=2)
    block = network.encoder.stages[1].blocks[0]

    assert isinstance(block, BottleneckBlock)
    assert block.conv1.conv.kernel_size == (1, 1)
    assert block.conv2.conv.stride == (2, 2)
    assert block.conv2.conv.out_channels == 2
    assert block.conv3.conv.out_channels == 8


@pytest.mark.parametrize("downsampling", ["max_pool", "avg_pool"])
def test_pool_downsampling_keeps_convs_unstrided(downsampling):
    network = build(3, downsampling=downsampling)
    stage = network.encoder.stages[1]

    assert not isinstance(stage.downsample, nn.Identity)
    assert stage.blocks[0].conv1.conv.stride == (1, 1, 1)


def test_drop_path_is_identity_in_eval():
    network = build(2, stochastic_depth=0.9)
    x = torch.randn(2, 2, 16, 16)

    network.eval()
    with torch.no_grad():
        first = network(x)[0]
        second = network(x)[0]

    assert torch.equal(first, second)


def test_drop_path_drops_whole_samples():
    layer = DropPath(0.5).train()
    torch.manual_seed(3)
    out = layer(torch.ones(64, 2, 3))

    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


@pytest.mark.parametrize("n_stages", [1, 2, 4])
@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "no_ds"])
def test_any_number_of_stages(n_stages, deep_supervision):
    network = ResEncUNet(
        input_channels=1,
        num_classes=2,
        deep_supervision=deep_supervision,
        n_stages=n_stages,
        features_per_stage=[4 * 2**stage for stage in range(n_stages)],
        conv_op="torch.nn.modules.conv.Conv2d",
        kernel_sizes=3,
        strides=[1] + [2] * (n_stages - 1),
        n_blocks_per_stage=1,
        n_conv_per_stage_decoder=1,
    )
    x = torch.randn(2, 1, 16, 16)

    outputs = network(x)

    if deep_supervision:
        assert isinstance(outputs, list)
        assert len(outputs) == max(1, n_stages - 1)
        assert [out.shape[-1] for out in outputs] == [16 // 2**index for index in range(len(outputs))]
    else:
        assert tuple(outputs.shape) == (2, 2, 16, 16)
    weighted_loss(as_list(outputs)).backward()
    check_gradients(network)


def test_anisotropic_kernels_and_strides():
    network = build(
        3,
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    )
    x = torch.randn(1, 2, 4, 16, 12)

    outputs = network(x)

    assert tuple(outputs[0].shape) == (1, 3, 4, 16, 12)
    assert tuple(outputs[1].shape) == (1, 3, 4, 8, 6)
    assert network.encoder.stem.conv.kernel_size == (1, 3, 3)
    assert network.decoder.stages[0].upsample.stride == (2, 2, 2)
    assert network.decoder.stages[1].upsample.stride == (1, 2, 2)


def test_state_dict_keys_equal_with_and_without_ds():
    with_ds = build(3, deep_supervision=True)
    without_ds = build(3, deep_supervision=False)

    assert list(with_ds.state_dict()) == list(without_ds.state_dict())
    without_ds.load_state_dict(with_ds.state_dict(), strict=True)


def test_seg_layer_keys_follow_nnunet_naming():
    keys = list(build(3).state_dict())

    assert [key for key in keys if key.startswith("decoder.seg_layers.")] == [
        "decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias",
        "decoder.seg_layers.1.weight", "decoder.seg_layers.1.bias",
    ]
    assert not [key for key in keys if ".heads." in key]


def test_legacy_heads_keys_load():
    source, target = build(2, num_classes=3), build(2, num_classes=3)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter))
    legacy = {key.replace("decoder.seg_layers.", "decoder.heads."): tensor
              for key, tensor in source.state_dict().items()}

    target.load_state_dict(legacy, strict=True)

    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def test_ds_toggle_sets_requires_grad():
    network = build(3, deep_supervision=True)
    seg_layers = network.decoder.seg_layers

    network.decoder.deep_supervision = False
    assert network.decoder.deep_supervision is False
    assert all(not p.requires_grad for seg_layer in seg_layers[:-1] for p in seg_layer.parameters())
    assert all(p.requires_grad for p in seg_layers[-1].parameters())
    assert all(p.requires_grad for p in network.encoder.parameters())

    network.decoder.deep_supervision = True
    assert all(p.requires_grad for p in network.parameters())


def test_ds_off_output_equals_first_ds_output():
    network = build(2, deep_supervision=True).eval()
    x = torch.randn(2, 2, 16, 16)

    with torch.no_grad():
        supervised = network(x)
        network.decoder.deep_supervision = False
        single = network(x)

    assert torch.equal(single, supervised[0])


@pytest.mark.parametrize("zero_init_residual", [True, False])
def test_initialize(zero_init_residual):
    network = build(3, zero_init_residual=zero_init_residual)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(0.5)

    network.apply(network.initialize)

    blocks = [module for module in network.modules() if isinstance(module, BasicBlock)]
    for block in blocks:
        expected = 0.0 if zero_init_residual else 0.5
        assert torch.all(block.conv2.norm.weight == expected)
        assert torch.all(block.conv2.norm.bias == expected)
        assert torch.all(block.conv1.norm.weight == 0.5)
        assert torch.all(block.conv1.conv.bias == 0)
        assert block.conv1.conv.weight.std() > 0
    assert torch.all(network.decoder.seg_layers[-1].bias == 0)
    assert torch.all(network.decoder.stages[0].upsample.bias == 0)


def test_zero_init_makes_blocks_start_as_shortcut():
    network = build(2, zero_init_residual=True)
    network.apply(network.initialize)
    block = network.encoder.stages[0].blocks[0]
    x = torch.randn(2, 4, 8, 8)

    assert torch.allclose(block(x), nn.functional.leaky_relu(x, 0.01))


def test_blocks_start_with_active_branch_by_default():
    network = build(2)
    network.apply(network.initialize)
    block = network.encoder.stages[0].blocks[0]
    x = torch.randn(2, 4, 8, 8)

    assert torch.all(block.conv2.norm.weight == 1)
    assert not torch.allclose(block(x), nn.functional.leaky_relu(x, 0.01))


@pytest.mark.parametrize("zero_init_residual", [True, False])
def test_first_step_reaches_residual_branches(zero_init_residual):
    # With zero-initialised last norms, the branch convs get no gradient until those norms have grown; this is
    # what delays learning (docs/benchmarks.md, "Early learning"). The default starts every branch training.
    network = build(3, zero_init_residual=zero_init_residual)
    network.apply(network.initialize)
    output = network(torch.randn(2, 2, 16, 16, 16))
    sum(item.square().mean() for item in as_list(output)).backward()

    blocks = [module for module in network.modules() if isinstance(module, BasicBlock)]
    assert blocks
    for block in blocks:
        gradient = block.conv1.conv.weight.grad
        if zero_init_residual:
            assert gradient is None or torch.count_nonzero(gradient) == 0
        else:
            assert torch.count_nonzero(gradient) > 0


def test_pickle_round_trip():
    network = build(3, squeeze_excitation=True, stochastic_depth=0.2).eval()
    x = torch.randn(1, 2, 16, 16, 16)

    restored = pickle.loads(pickle.dumps(network))
    restored.eval()

    with torch.no_grad():
        expected = network(x)
        actual = restored(x)
    for left, right in zip(expected, actual):
        assert torch.equal(left, right)
    assert restored.decoder.deep_supervision is True


def test_no_lambda_modules():
    network = build(3, squeeze_excitation=True, stochastic_depth=0.2, dropout_op="torch.nn.Dropout3d",
                    dropout_op_kwargs={"p": 0.1})

    for name, module in network.named_modules():
        assert isinstance(module, nn.Module), name
    for module in network.modules():
        for value in vars(module).values():
            assert getattr(value, "__name__", "") != "<lambda>"


def test_classes_accepted_as_well_as_strings():
    from_strings = build(3)
    from_classes = build(
        3, conv_op=nn.Conv3d, norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU
    )

    assert [type(m) for m in from_strings.modules()] == [type(m) for m in from_classes.modules()]


def test_group_norm_group_count():
    default_groups = build(2, norm_op="group", norm_op_kwargs=None, features_per_stage=[4, 12, 16])
    explicit_groups = build(2, norm_op="torch.nn.GroupNorm", norm_op_kwargs={"num_groups": 2})

    assert default_groups.encoder.stem.norm.num_groups == 4
    assert default_groups.encoder.stages[1].blocks[0].conv1.norm.num_groups == 4
    assert default_groups.encoder.stages[2].blocks[0].conv1.norm.num_groups == 8
    assert explicit_groups.encoder.stages[2].blocks[0].conv1.norm.num_groups == 2


def test_feature_map_size_counts_seg_layers_by_ds():
    network = build(3, deep_supervision=True)
    with_ds = network.compute_conv_feature_map_size((16, 16, 16))
    network.decoder.deep_supervision = False
    without_ds = network.compute_conv_feature_map_size([16, 16, 16])

    assert isinstance(with_ds, int)
    assert with_ds - without_ds == 3 * 8**3


def test_built_by_nnunet_get_network_from_plans():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch_kwargs = tiny_kwargs(3, norm_op="torch.nn.modules.instancenorm.InstanceNorm3d")
    # zero_init_residual from the plans shows that nnU-Net ran the network's initialize.
    arch_kwargs.update(dropout_op=None, dropout_op_kwargs=None, zero_init_residual=True)

    network = get_network_from_plans(
        "nnunet_resenc_plugin.networks.resenc_unet.ResEncUNet",
        arch_kwargs,
        ["conv_op", "norm_op", "dropout_op", "nonlin"],
        input_channels=1,
        output_channels=2,
        allow_init=True,
        deep_supervision=True,
    )

    assert isinstance(network, ResEncUNet)
    assert isinstance(network.encoder.stem.norm, nn.InstanceNorm3d)
    assert torch.all(network.encoder.stages[0].blocks[0].conv2.norm.weight == 0)
    outputs = network(torch.randn(1, 1, 16, 16, 16))
    assert len(outputs) == 2
    network.decoder.deep_supervision = False
    assert isinstance(network(torch.randn(1, 1, 16, 16, 16)), torch.Tensor)


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["ds", "no_ds"])
def test_dynamo_captures_full_graph(deep_supervision):
    torch._dynamo.reset()
    network = build(3, deep_supervision, squeeze_excitation=True, stochastic_depth=0.1).eval()
    compiled = torch.compile(network, backend="eager", fullgraph=True)
    x = torch.randn(1, 2, 16, 16, 16)

    with torch.no_grad():
        expected = as_list(network(x))
        actual = as_list(compiled(x))

    assert len(actual) == len(expected)
    for left, right in zip(expected, actual):
        assert torch.allclose(left, right)


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    # Earlier compilations with other shapes would make dynamo mark shapes dynamic. Inductor in torch 2.14.1
    # fails on this network with dynamic shapes, as it does on dynamic-network-architectures' ResidualEncoderUNet.
    torch._dynamo.reset()
    network = build(2, True)
    compiled = torch.compile(network, dynamic=False)
    x = torch.randn(2, 2, 16, 16)

    actual = compiled(x)
    expected = network(x)

    for left, right in zip(expected, actual):
        assert torch.allclose(left, right, atol=1e-5)
    weighted_loss(actual).backward()
    check_gradients(network)


def test_numpy_arguments_accepted():
    import numpy as np

    network = ResEncUNet(
        input_channels=np.int64(2),
        num_classes=np.int64(3),
        deep_supervision=True,
        **tiny_kwargs(
            3,
            n_stages=np.int64(3),
            features_per_stage=np.array([4, 8, 16]),
            strides=np.array([[1, 1, 1], [2, 2, 2], [1, 2, 2]]),
            kernel_sizes=(np.int64(3), (3, 3, 3), [1, 3, 3]),
            n_blocks_per_stage=[np.int64(1), 2, 2],
        ),
    )

    assert network.encoder.stages[2].blocks[0].conv1.conv.stride == (1, 2, 2)
    assert network.encoder.stages[2].blocks[0].conv1.conv.kernel_size == (1, 3, 3)
    assert isinstance(network.num_classes, int)
    assert tuple(network(torch.randn(1, 2, 8, 16, 16))[0].shape) == (1, 3, 8, 16, 16)
