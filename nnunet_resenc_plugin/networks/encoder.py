"""Residual encoder: a stem convolution followed by stages of residual blocks, one stage per resolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.networks.blocks import BasicBlock, BottleneckBlock, ConvNormAct
from nnunet_resenc_plugin.networks.layers import POOL_KINDS, LayerSpec


@dataclass(frozen=True)
class EncoderTopology:
    """Per-stage shape of the encoder, already checked and expanded to one entry per stage.

    Attributes:
        features_per_stage: Output channels of each stage.
        kernel_sizes: Per-axis kernel size of each stage.
        strides: Per-axis stride of each stage; the first one is all ones.
        n_blocks_per_stage: Residual blocks in each stage.
        bottleneck_channels: Bottleneck width of each stage (used by bottleneck blocks only).
        stem_channels: Output channels of the stem convolution.
    """

    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_blocks_per_stage: tuple[int, ...]
    bottleneck_channels: tuple[int, ...]
    stem_channels: int

    @property
    def n_stages(self) -> int:
        """Number of resolution stages."""
        return len(self.features_per_stage)


@dataclass(frozen=True)
class BlockOptions:
    """Residual block settings shared by all stages.

    Attributes:
        block: "basic" or "bottleneck".
        downsampling: "conv" (strided first block), "max_pool" or "avg_pool" (pooling before the stage).
        shortcut: Shortcut kind, see `blocks.Shortcut`.
        squeeze_excitation_reduction: Hidden-channel fraction of squeeze-and-excitation, or None for none.
        stochastic_depth: Drop-path probability of the deepest block; block l of L gets `stochastic_depth * l / L`.
        zero_init_residual: Whether `initialize` zeroes the last norm of each residual branch.
    """

    block: str = "basic"
    downsampling: str = "conv"
    shortcut: str = "avg_pool_conv"
    squeeze_excitation_reduction: float | None = None
    stochastic_depth: float = 0.0
    zero_init_residual: bool = False


class EncoderStage(nn.Module):
    """One resolution stage: optional pooling, then residual blocks; only the first block may be strided."""

    def __init__(
        self,
        layers: LayerSpec,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        n_blocks: int,
        options: BlockOptions,
        drop_path_rates: Sequence[float],
    ) -> None:
        super().__init__()
        self.stride = list(stride)
        ones = [1] * len(stride)
        is_strided = any(step != 1 for step in stride)

        pools = options.downsampling in POOL_KINDS and is_strided
        self.downsample = layers.make_pool(options.downsampling, stride) if pools else nn.Identity()
        block_stride = ones if pools else self.stride

        blocks = []
        for index in range(n_blocks):
            block_options = dict(
                shortcut=options.shortcut,
                squeeze_excitation_reduction=options.squeeze_excitation_reduction,
                drop_path=drop_path_rates[index],
                zero_init_residual=options.zero_init_residual,
            )
            block_in = in_channels if index == 0 else out_channels
            stride_here = block_stride if index == 0 else ones
            if options.block == "basic":
                block = BasicBlock(layers, block_in, out_channels, kernel_size, stride_here, **block_options)
            else:
                block = BottleneckBlock(
                    layers, block_in, bottleneck_channels, out_channels, kernel_size, stride_here, **block_options
                )
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.pools_before_blocks = pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)

        return self.blocks(x)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for a `(*spatial)` input size."""
        output_size = [size // step for size, step in zip(input_size, self.stride)]
        size = self.blocks[0].compute_conv_feature_map_size(output_size if self.pools_before_blocks else input_size)
        for block in self.blocks[1:]:
            size += block.compute_conv_feature_map_size(output_size)
        return size


class ResidualEncoder(nn.Module):
    """Stem convolution plus one `EncoderStage` per resolution; returns every stage output for the skips.

    Args:
        layers: Layer classes and settings.
        input_channels: Channels of the network input.
        topology: Per-stage shapes.
        options: Residual block settings.
    """

    def __init__(
        self, layers: LayerSpec, input_channels: int, topology: EncoderTopology, options: BlockOptions
    ) -> None:
        super().__init__()
        ones = [1] * layers.dim
        self.stem = ConvNormAct(
            layers, input_channels, topology.stem_channels, topology.kernel_sizes[0], ones, dropout=True
        )

        # Linear decay rule of stochastic depth (Huang et al., 2016): block l of L drops with probability p * l / L.
        total_blocks = sum(topology.n_blocks_per_stage)
        rates = [options.stochastic_depth * (index + 1) / total_blocks for index in range(total_blocks)]

        stages = []
        in_channels = topology.stem_channels
        first_block = 0
        for stage in range(topology.n_stages):
            n_blocks = topology.n_blocks_per_stage[stage]
            stages.append(
                EncoderStage(
                    layers,
                    in_channels,
                    topology.features_per_stage[stage],
                    topology.bottleneck_channels[stage],
                    topology.kernel_sizes[stage],
                    topology.strides[stage],
                    n_blocks,
                    options,
                    rates[first_block : first_block + n_blocks],
                )
            )
            in_channels = topology.features_per_stage[stage]
            first_block += n_blocks
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the output of every stage, highest resolution first."""
        x = self.stem(x)

        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for a `(*spatial)` input size."""
        size = self.stem.compute_conv_feature_map_size(input_size)
        for stage in self.stages:
            size += stage.compute_conv_feature_map_size(input_size)
            input_size = [length // step for length, step in zip(input_size, stage.stride)]
        return size
