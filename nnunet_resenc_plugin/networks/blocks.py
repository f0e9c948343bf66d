"""Building blocks: conv-norm-activation, residual blocks, shortcuts, squeeze-and-excitation and drop path.

All blocks take a `LayerSpec`, so the same code builds 1D, 2D and 3D networks. Tensors are `(B, C, *spatial)`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nnunet_resenc_plugin.networks.layers import LayerSpec

BLOCK_TYPES = ("basic", "bottleneck")
SHORTCUT_TYPES = ("avg_pool_conv", "conv")


def _output_size(input_size: Sequence[int], stride: Sequence[int]) -> list[int]:
    return [size // step for size, step in zip(input_size, stride)]


class ConvNormAct(nn.Module):
    """Convolution, optional dropout, normalisation and nonlinearity, in this order.

    Args:
        layers: Layer classes and settings.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Per-axis kernel size.
        stride: Per-axis stride.
        dropout: Whether to apply `layers.dropout_op` after the convolution.
        activation: Whether to end with `layers.nonlin`; False leaves the output before the activation, as
            needed before a residual addition.
    """

    def __init__(
        self,
        layers: LayerSpec,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        dropout: bool = False,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = list(stride)

        self.conv = layers.make_conv(in_channels, out_channels, kernel_size, self.stride)
        self.dropout = layers.make_dropout() if dropout else nn.Identity()
        self.norm = layers.make_norm(out_channels)
        self.act = layers.make_nonlin() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.dropout(x)
        x = self.norm(x)

        return self.act(x)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of output elements per sample for a `(*spatial)` input size."""
        return self.out_channels * math.prod(_output_size(input_size, self.stride))


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pooling, a bottleneck of two 1x1 convs and a sigmoid gate.

    Args:
        layers: Layer classes; only `conv_op` is used.
        channels: Channels of the input and output.
        reduction: Hidden channels as a fraction of `channels` (at least one hidden channel).
    """

    def __init__(self, layers: LayerSpec, channels: int, reduction: float) -> None:
        super().__init__()
        hidden = max(1, round(channels * reduction))

        self.reduce = layers.conv_op(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.expand = layers.conv_op(hidden, channels, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_dims = tuple(range(2, x.ndim))
        weights = x.mean(dim=spatial_dims, keepdim=True)

        weights = self.act(self.reduce(weights))
        weights = self.gate(self.expand(weights))

        return x * weights


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples during training.

    Kept samples are scaled by `1 / (1 - p)` so the expected output does not change; in eval mode this is the
    identity.

    Args:
        p: Probability of dropping the branch for one sample, in [0, 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x

        keep = 1.0 - self.p
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep)

        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Shortcut(nn.Module):
    """Projection shortcut of a residual block, for blocks that change the channels or the resolution.

    With `kind="avg_pool_conv"` (ResNet-D) a strided block pools with an average pool whose kernel equals the
    stride, and a 1x1 conv with a norm projects the channels if they change. With `kind="conv"` (the classic
    ResNet projection) one strided 1x1 conv with a norm does both.

    Args:
        layers: Layer classes and settings.
        in_channels: Channels entering the block.
        out_channels: Channels leaving the block.
        stride: Per-axis stride of the block.
        kind: One of `SHORTCUT_TYPES`.
    """

    def __init__(
        self, layers: LayerSpec, in_channels: int, out_channels: int, stride: Sequence[int], kind: str
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = list(stride)
        is_strided = any(step != 1 for step in stride)
        ones = [1] * len(stride)

        if kind == "avg_pool_conv":
            self.pool = layers.make_pool("avg_pool", stride) if is_strided else nn.Identity()
            needs_conv = in_channels != out_channels
            conv_stride = ones
        else:
            self.pool = nn.Identity()
            needs_conv = True
            conv_stride = self.stride

        # The norm after the projection makes a conv bias redundant.
        if needs_conv:
            self.conv = layers.make_conv(in_channels, out_channels, ones, conv_stride, bias=False)
            self.norm = layers.make_norm(out_channels)
        else:
            self.conv = nn.Identity()
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.conv(x)

        return self.norm(x)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of output elements per sample for a `(*spatial)` input size."""
        return self.out_channels * math.prod(_output_size(input_size, self.stride))


def make_shortcut(
    layers: LayerSpec, in_channels: int, out_channels: int, stride: Sequence[int], kind: str
) -> nn.Module:
    """Build the shortcut of a residual block: `nn.Identity` when shapes do not change, else a `Shortcut`."""
    if in_channels == out_channels and all(step == 1 for step in stride):
        return nn.Identity()
    return Shortcut(layers, in_channels, out_channels, stride, kind)


class ResidualBlock(nn.Module):
    """Base class of residual blocks: `act(drop_path(se(branch(x))) + shortcut(x))`.

    Subclasses build the branch, whose last layer is a conv and a norm without activation, and implement
    `residual_branch` and `last_norm`.

    Args:
        layers: Layer classes and settings.
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Per-axis stride of the block.
        shortcut: One of `SHORTCUT_TYPES`.
        squeeze_excitation_reduction: Hidden-channel fraction of squeeze-and-excitation, or None for none.
        drop_path: Stochastic depth probability of this block.
        zero_init_residual: Whether `zero_init_last_norm` sets the last norm's weight and bias to zero, so the
            block starts as its shortcut.
    """

    def __init__(
        self,
        layers: LayerSpec,
        in_channels: int,
        out_channels: int,
        stride: Sequence[int],
        shortcut: str,
        squeeze_excitation_reduction: float | None,
        drop_path: float,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = list(stride)
        self.zero_init_residual = zero_init_residual

        self.shortcut = make_shortcut(layers, in_channels, out_channels, self.stride, shortcut)
        if squeeze_excitation_reduction is None:
            self.squeeze_excitation = nn.Identity()
        else:
            self.squeeze_excitation = SqueezeExcitation(layers, out_channels, squeeze_excitation_reduction)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.act = layers.make_nonlin()

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions of the residual branch, `(B, C_in, *spatial)` to `(B, C_out, *spatial / stride)`."""
        raise NotImplementedError

    @property
    def last_norm(self) -> nn.Module:
        """Norm layer right before the residual addition."""
        raise NotImplementedError

    def zero_init_last_norm(self) -> None:
        """Set the weight and bias of the last norm to zero if it has them and `zero_init_residual` is on."""
        norm = self.last_norm
        if not self.zero_init_residual or getattr(norm, "weight", None) is None:
            return

        nn.init.zeros_(norm.weight)
        if norm.bias is not None:
            nn.init.zeros_(norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)

        out = self.residual_branch(x)
        out = self.squeeze_excitation(out)
        out = self.drop_path(out)

        # In place, as the branch output is not needed again; autograd raises if a layer saved it for backward.
        out += identity
        return self.act(out)

    def _shortcut_feature_map_size(self, input_size: Sequence[int]) -> int:
        if isinstance(self.shortcut, Shortcut):
            return self.shortcut.compute_conv_feature_map_size(input_size)
        return 0


class BasicBlock(ResidualBlock):
    """Two kxk convolutions; the first one carries the stride and the dropout.

    Args:
        layers: Layer classes and settings.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Per-axis kernel size of both convolutions.
        stride: Per-axis stride of the block.
        **options: Keyword arguments of `ResidualBlock`.
    """

    def __init__(
        self,
        layers: LayerSpec,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        **options,
    ) -> None:
        super().__init__(layers, in_channels, out_channels, stride, **options)
        ones = [1] * len(stride)

        self.conv1 = ConvNormAct(layers, in_channels, out_channels, kernel_size, stride, dropout=True)
        self.conv2 = ConvNormAct(layers, out_channels, out_channels, kernel_size, ones, activation=False)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))

    @property
    def last_norm(self) -> nn.Module:
        return self.conv2.norm

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for a `(*spatial)` input size."""
        size = self.conv1.compute_conv_feature_map_size(input_size)
        size += self.conv2.compute_conv_feature_map_size(_output_size(input_size, self.stride))

        return size + self._shortcut_feature_map_size(input_size)


class BottleneckBlock(ResidualBlock):
    """A 1x1 reduction, a strided kxk convolution with dropout, and a 1x1 expansion (ResNet-D stride placement).

    Args:
        layers: Layer classes and settings.
        in_channels: Input channels.
        bottleneck_channels: Channels of the kxk convolution.
        out_channels: Output channels.
        kernel_size: Per-axis kernel size of the middle convolution.
        stride: Per-axis stride of the block.
        **options: Keyword arguments of `ResidualBlock`.
    """

    def __init__(
        self,
        layers: LayerSpec,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        **options,
    ) -> None:
        super().__init__(layers, in_channels, out_channels, stride, **options)
        ones = [1] * len(stride)

        self.conv1 = ConvNormAct(layers, in_channels, bottleneck_channels, ones, ones)
        self.conv2 = ConvNormAct(layers, bottleneck_channels, bottleneck_channels, kernel_size, stride, dropout=True)
        self.conv3 = ConvNormAct(layers, bottleneck_channels, out_channels, ones, ones, activation=False)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))

    @property
    def last_norm(self) -> nn.Module:
        return self.conv3.norm

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Return the number of conv output elements per sample for a `(*spatial)` input size."""
        output_size = _output_size(input_size, self.stride)
        size = self.conv1.compute_conv_feature_map_size(input_size)
        size += self.conv2.compute_conv_feature_map_size(input_size)
        size += self.conv3.compute_conv_feature_map_size(output_size)

        return size + self._shortcut_feature_map_size(input_size)
