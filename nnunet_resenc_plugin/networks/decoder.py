"""U-Net decoder: transposed-convolution upsampling, skip concatenation, convolutions and segmentation heads."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.networks.blocks import ConvNormAct
from nnunet_resenc_plugin.networks.encoder import EncoderTopology
from nnunet_resenc_plugin.networks.layers import LayerSpec


class DecoderStage(nn.Module):
    """Upsample the features from below, concatenate the skip, and merge them with `n_convs` convolutions.

    Args:
        layers: Layer classes and settings.
        below_channels: Channels of the lower-resolution input.
        skip_channels: Channels of the skip connection, also the output channels.
        kernel_size: Per-axis kernel size of the convolutions.
        stride: Per-axis upsampling factor.
        n_convs: Number of convolutions after the concatenation.
    """

    def __init__(
        self,
        layers: LayerSpec,
        below_channels: int,
        skip_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        n_convs: int,
    ) -> None:
        super().__init__()
        ones = [1] * len(stride)
        self.out_channels = skip_channels

        self.upsample = layers.make_transposed_conv(below_channels, skip_channels, stride)
        self.convs = nn.Sequential(
            *[
                ConvNormAct(layers, 2 * skip_channels if i == 0 else skip_channels, skip_channels, kernel_size, ones,
                            dropout=True)
                for i in range(n_convs)
            ]
        )

    def forward(self, below: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(below)
        x = torch.cat((x, skip), dim=1)

        return self.convs(x)

    def compute_conv_feature_map_size(self, skip_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample, given the skip's `(*spatial)` size."""
        size = self.out_channels * math.prod(skip_size)
        for conv in self.convs:
            size += conv.compute_conv_feature_map_size(skip_size)
        return size


class UNetDecoder(nn.Module):
    """Decoder with one stage per encoder stage except the deepest, and a 1x1 segmentation head per stage.

    `stages` and `heads` are in computation order, lowest resolution first; the last head gives the
    full-resolution output. With a single encoder stage there is no decoder stage and the one head is applied to
    the encoder output. Every head is always built, so the state-dict keys do not depend on deep supervision.

    Args:
        layers: Layer classes and settings.
        topology: Encoder shapes.
        num_classes: Output channels of the heads.
        n_conv_per_stage: Convolutions per decoder stage, lowest resolution first.
        deep_supervision: Initial value of `deep_supervision`.
    """

    def __init__(
        self,
        layers: LayerSpec,
        topology: EncoderTopology,
        num_classes: int,
        n_conv_per_stage: Sequence[int],
        deep_supervision: bool,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = [list(stride) for stride in topology.strides]

        features = topology.features_per_stage
        stages = []
        for index in range(topology.n_stages - 1):
            below = topology.n_stages - 1 - index
            stages.append(
                DecoderStage(
                    layers,
                    below_channels=features[below],
                    skip_channels=features[below - 1],
                    kernel_size=topology.kernel_sizes[below - 1],
                    stride=topology.strides[below],
                    n_convs=n_conv_per_stage[index],
                )
            )
        self.stages = nn.ModuleList(stages)

        head_channels = [stage.out_channels for stage in stages] or [features[0]]
        self.heads = nn.ModuleList(
            [layers.conv_op(channels, num_classes, kernel_size=1, bias=True) for channels in head_channels]
        )

        self._deep_supervision = bool(deep_supervision)
        self.deep_supervision = deep_supervision

    @property
    def deep_supervision(self) -> bool:
        """Whether `forward` returns one output per resolution (a list) instead of the full-resolution tensor.

        Switching it off sets `requires_grad=False` on the auxiliary heads, which then take no part in the
        forward pass, so DistributedDataParallel finds no unused trainable parameter. Switching it on makes them
        trainable again. The full-resolution head always trains.
        """
        return self._deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self._deep_supervision = bool(enabled)
        for head in self.heads[:-1]:
            head.requires_grad_(self._deep_supervision)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Decode the encoder outputs.

        Args:
            skips: Encoder stage outputs, highest resolution first.

        Returns:
            With deep supervision, a list of `(B, num_classes, *spatial)` logits, highest resolution first, one per
            head; without it, the full-resolution logits.
        """
        x = skips[-1]
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x, skips[-(index + 2)])
            if self._deep_supervision:
                outputs.append(self.heads[index](x))

        if not self._deep_supervision:
            return self.heads[-1](x)
        if not outputs:
            outputs.append(self.heads[-1](x))
        return outputs[::-1]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for the network's `(*spatial)` input size.

        Heads count only where they run: all of them with deep supervision, else the full-resolution one.
        """
        sizes = [list(input_size)]
        for stride in self.strides[1:]:
            sizes.append([length // step for length, step in zip(sizes[-1], stride)])

        size = 0
        for index, stage in enumerate(self.stages):
            skip_size = sizes[len(self.stages) - 1 - index]
            size += stage.compute_conv_feature_map_size(skip_size)
            if self._deep_supervision or index == len(self.stages) - 1:
                size += self.num_classes * math.prod(skip_size)

        if not self.stages:
            size += self.num_classes * math.prod(sizes[0])
        return size
