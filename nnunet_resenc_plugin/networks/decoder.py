"""U-Net decoder: transposed-convolution upsampling, skip concatenation, convolutions and segmentation layers."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.networks.blocks import ConvNormAct
from nnunet_resenc_plugin.networks.encoder import EncoderTopology
from nnunet_resenc_plugin.networks.layers import LayerSpec

# Attribute name of the segmentation output layers in older plugin versions, whose checkpoints store them under
# `decoder.heads.N.weight/bias`. `UNetDecoder` loads those keys as `seg_layers`.
LEGACY_SEG_LAYERS_NAME = "heads"


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
    """Decoder with one stage per encoder stage except the deepest, and a 1x1 segmentation layer per stage.

    `stages` and `seg_layers` are in computation order, lowest resolution first; the last segmentation layer gives
    the full-resolution output. With a single encoder stage there is no decoder stage and the one segmentation
    layer is applied to the encoder output. Every segmentation layer is always built, so the state-dict keys do
    not depend on deep supervision. The name `seg_layers` matches dynamic-network-architectures' decoders, so
    nnU-Net's `-pretrained_weights` loader, which skips keys containing `.seg_layers.`, leaves these layers out
    when the number of classes differs.

    Args:
        layers: Layer classes and settings.
        topology: Encoder shapes.
        num_classes: Output channels of the segmentation layers.
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

        seg_layer_channels = [stage.out_channels for stage in stages] or [features[0]]
        self.seg_layers = nn.ModuleList(
            [layers.conv_op(channels, num_classes, kernel_size=1, bias=True) for channels in seg_layer_channels]
        )

        self._deep_supervision = bool(deep_supervision)
        self.deep_supervision = deep_supervision

    @property
    def deep_supervision(self) -> bool:
        """Whether `forward` returns one output per resolution (a list) instead of the full-resolution tensor.

        Switching it off sets `requires_grad=False` on the auxiliary segmentation layers, which then take no part
        in the forward pass, so DistributedDataParallel finds no unused trainable parameter. Switching it on makes
        them trainable again. The full-resolution segmentation layer always trains.
        """
        return self._deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self._deep_supervision = bool(enabled)
        for seg_layer in self.seg_layers[:-1]:
            seg_layer.requires_grad_(self._deep_supervision)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Decode the encoder outputs.

        Args:
            skips: Encoder stage outputs, highest resolution first.

        Returns:
            With deep supervision, a list of `(B, num_classes, *spatial)` logits, highest resolution first, one per
            segmentation layer; without it, the full-resolution logits.
        """
        x = skips[-1]
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x, skips[-(index + 2)])
            if self._deep_supervision:
                outputs.append(self.seg_layers[index](x))

        if not self._deep_supervision:
            return self.seg_layers[-1](x)
        if not outputs:
            outputs.append(self.seg_layers[-1](x))
        return outputs[::-1]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Rename the `heads.N.*` keys of older plugin checkpoints to `seg_layers.N.*`. `load_state_dict` passes a
        # copy of the caller's dict and loads the children after this call, so the renamed entries load. A legacy
        # key whose new name is also present stays, and strict loading reports it as unexpected.
        legacy_prefix = f"{prefix}{LEGACY_SEG_LAYERS_NAME}."
        for key in [key for key in state_dict if key.startswith(legacy_prefix)]:
            new_key = f"{prefix}seg_layers.{key[len(legacy_prefix):]}"
            if new_key not in state_dict:
                state_dict[new_key] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for the network's `(*spatial)` input size.

        Segmentation layers count only where they run: all of them with deep supervision, else the
        full-resolution one.
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
