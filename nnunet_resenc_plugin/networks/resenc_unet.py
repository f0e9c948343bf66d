"""Residual-encoder U-Net that nnU-Net builds from a plans file.

The dotted path `nnunet_resenc_plugin.networks.resenc_unet.ResEncUNet` is written into plans files, so this
module must not move.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_resenc_plugin.errors import NetworkConfigError
from nnunet_resenc_plugin.networks.arguments import (
    build_block_options,
    build_topology,
    expand_per_stage,
    is_int,
    total_strides,
)
from nnunet_resenc_plugin.networks.blocks import ResidualBlock
from nnunet_resenc_plugin.networks.decoder import UNetDecoder
from nnunet_resenc_plugin.networks.encoder import ResidualEncoder
from nnunet_resenc_plugin.networks.layers import LayerSpec

logger = logging.getLogger(__name__)

#: Negative slope assumed by the He initialisation, that of nnU-Net's default LeakyReLU.
HE_INIT_NEGATIVE_SLOPE = 1e-2


class ResEncUNet(nn.Module):
    """U-Net with a residual encoder, for 1D, 2D and 3D inputs and any number of stages.

    nnU-Net builds it as `ResEncUNet(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`
    and then calls `network.apply(network.initialize)`. With `block="basic"`, `shortcut="avg_pool_conv"`,
    `downsampling="conv"`, instance norm, `conv_bias=True` and LeakyReLU it computes the same function as
    dynamic-network-architectures' `ResidualEncoderUNet`, whose checkpoints `networks.conversion` converts.

    Args:
        input_channels: Channels of the input image.
        num_classes: Output channels (segmentation classes, or regions).
        deep_supervision: Whether `forward` returns one output per resolution; settable later through
            `decoder.deep_supervision`.
        n_stages: Number of resolution stages, >= 1.
        features_per_stage: Channels per stage (an int for all stages).
        conv_op: `torch.nn.Conv1d`/`Conv2d`/`Conv3d` or its dotted path; sets the number of spatial axes.
        kernel_sizes: Per-stage kernel sizes, each an int or a per-axis list.
        strides: Per-stage strides, each an int or a per-axis list; the first must be all ones.
        n_blocks_per_stage: Residual blocks per stage (an int for all stages).
        n_conv_per_stage_decoder: Convolutions per decoder stage, `n_stages - 1` entries lowest resolution
            first (an int for all).
        conv_bias: Whether the main-path convolutions and transposed convolutions have a bias.
        norm_op: None, "instance", "batch", "group", a norm class or its dotted path.
        norm_op_kwargs: Keyword arguments of the norm; None means `{"eps": 1e-5, "affine": True}`. For GroupNorm
            also `num_groups` (default: the greatest common divisor of the channel count and 8).
        dropout_op: Dropout class or dotted path, or None. Applied after the stem conv, the first conv of each
            basic block, the kxk conv of each bottleneck block and each decoder conv.
        dropout_op_kwargs: Keyword arguments of the dropout.
        nonlin: Nonlinearity class or dotted path, or None.
        nonlin_kwargs: Keyword arguments of the nonlinearity.
        block: "basic" (two kxk convs) or "bottleneck" (1x1, kxk, 1x1).
        bottleneck_channels: Middle width of bottleneck blocks per stage; None uses a quarter of the features.
        downsampling: "conv" (strided first conv of each stage), "max_pool" or "avg_pool" (pooling before it).
        shortcut: "avg_pool_conv" (average pool, then a 1x1 conv if the channels change) or "conv" (a strided
            1x1 conv).
        squeeze_excitation: Whether each residual branch ends with squeeze-and-excitation.
        squeeze_excitation_reduction: Fraction of channels in the squeeze-and-excitation bottleneck.
        stochastic_depth: Drop-path probability of the deepest residual block; block l of L uses
            `stochastic_depth * l / L`.
        stem_channels: Output channels of the stem conv; None uses `features_per_stage[0]`.
        zero_init_residual: Whether `initialize` zeroes the last norm of each residual branch, so every block
            starts as its shortcut, as dynamic-network-architectures does. Off by default: with it on, the
            encoder starts as one conv followed by 1x1 projections, and on the MSD hippocampus the network
            predicted only background for the first 150 iterations (docs/benchmarks.md, "Early learning").

    Raises:
        NetworkConfigError: invalid arguments, before any layer is built.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        *,
        n_stages: int,
        features_per_stage: int | list[int],
        conv_op: type[_ConvNd] | str,
        kernel_sizes: int | list,
        strides: int | list,
        n_blocks_per_stage: int | list[int],
        n_conv_per_stage_decoder: int | list[int],
        conv_bias: bool = True,
        norm_op: type[nn.Module] | str | None = "instance",
        norm_op_kwargs: Mapping[str, Any] | None = None,
        dropout_op: type[nn.Module] | str | None = None,
        dropout_op_kwargs: Mapping[str, Any] | None = None,
        nonlin: type[nn.Module] | str | None = nn.LeakyReLU,
        nonlin_kwargs: Mapping[str, Any] | None = None,
        block: str = "basic",
        bottleneck_channels: int | list[int] | None = None,
        downsampling: str = "conv",
        shortcut: str = "avg_pool_conv",
        squeeze_excitation: bool = False,
        squeeze_excitation_reduction: float = 0.0625,
        stochastic_depth: float = 0.0,
        stem_channels: int | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("input_channels", input_channels), ("num_classes", num_classes)):
            if not is_int(value) or value < 1:
                raise NetworkConfigError(f"{name}={value!r} must be an int >= 1.")
        input_channels, num_classes = int(input_channels), int(num_classes)

        if norm_op_kwargs is None and norm_op is not None:
            norm_op_kwargs = {"eps": 1e-5, "affine": True}
        layers = LayerSpec.from_arguments(
            conv_op, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, conv_bias
        )
        topology = build_topology(
            n_stages, layers.dim, features_per_stage, kernel_sizes, strides, n_blocks_per_stage, block,
            bottleneck_channels, stem_channels,
        )
        decoder_convs = expand_per_stage("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n_stages - 1, 1)
        options = build_block_options(
            block, downsampling, shortcut, squeeze_excitation, squeeze_excitation_reduction, stochastic_depth,
            zero_init_residual,
        )

        self.input_channels = input_channels
        self.num_classes = num_classes
        self.spatial_dims = layers.dim
        self.total_stride = total_strides(topology.strides)

        self.encoder = ResidualEncoder(layers, input_channels, topology, options)
        self.decoder = UNetDecoder(layers, topology, num_classes, decoder_convs, deep_supervision)
        logger.debug(
            "Built %dD ResEncUNet: %d stages, %s blocks, total stride %s",
            self.spatial_dims, n_stages, block, self.total_stride,
        )

    def check_input_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        """Check a `(B, C, *spatial)` input shape against the network.

        Raises:
            NetworkConfigError: wrong number of axes or channels, or a spatial size not divisible by the total
                stride.
        """
        if len(shape) != self.spatial_dims + 2:
            raise NetworkConfigError(
                f"Input shape {tuple(shape)} has {len(shape)} axes, but this {self.spatial_dims}D network expects "
                f"{self.spatial_dims + 2}: (batch, channels, {self.spatial_dims} spatial axes)."
            )
        if shape[1] != self.input_channels:
            raise NetworkConfigError(
                f"Input shape {tuple(shape)} has {shape[1]} channels, but the network was built with "
                f"input_channels={self.input_channels}. Pass images with {self.input_channels} channels or rebuild "
                f"the network."
            )
        spatial = list(shape[2:])
        if any(size % total != 0 for size, total in zip(spatial, self.total_stride)):
            raise NetworkConfigError(
                f"Input spatial size {spatial} is not divisible by the total stride {self.total_stride} per axis. "
                f"Crop or pad each axis to a multiple of its total stride."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment `x` of shape `(B, input_channels, *spatial)`.

        Returns:
            `(B, num_classes, *spatial)` logits, or with deep supervision a list of logits at every decoder
            resolution, highest first.
        """
        self.check_input_shape(x.shape)
        skips = self.encoder(x)

        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size: list[int] | tuple[int, ...]) -> int:
        """Count the output elements of all convolutions and segmentation layers for one sample of `input_size`.

        nnU-Net planners use this as a proxy for activation memory. At the stock-equivalent options it equals
        dynamic-network-architectures' `ResidualEncoderUNet.compute_conv_feature_map_size`. Pooling layers are
        not counted.

        Args:
            input_size: Spatial patch size, without batch and channel axes.

        Raises:
            NetworkConfigError: `input_size` has the wrong number of axes.
        """
        if len(input_size) != self.spatial_dims:
            raise NetworkConfigError(
                f"input_size={list(input_size)} must give the {self.spatial_dims} spatial sizes only, without batch "
                f"or channel axes."
            )
        size = self.encoder.compute_conv_feature_map_size(input_size)
        size += self.decoder.compute_conv_feature_map_size(input_size)
        return int(size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """Initialise one module; use as `network.apply(network.initialize)`.

        Convolutions and transposed convolutions get He (Kaiming normal) weights for LeakyReLU slope 0.01 and
        zero biases. Residual blocks built with `zero_init_residual=True` zero their last norm.
        """
        if isinstance(module, _ConvNd):
            nn.init.kaiming_normal_(module.weight, a=HE_INIT_NEGATIVE_SLOPE)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if isinstance(module, ResidualBlock):
            module.zero_init_last_norm()
