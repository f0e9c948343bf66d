"""Resolve layer choices (conv, norm, dropout, nonlinearity) once and build layers from them.

nnU-Net plans give layer types as dotted paths, Python callers pass classes, and the plugin also accepts short
norm names. Everything is turned into classes here, at the boundary, and bundled in the frozen `LayerSpec`, so
that blocks never branch on 2D or 3D.
"""

from __future__ import annotations

import math
import pydoc
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from torch import nn

from nnunet_resenc_plugin.errors import NetworkConfigError

#: Keyword arguments of `ResEncUNet` that nnU-Net plans store as dotted paths and turn into classes.
KWARGS_REQUIRING_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")

_CONV_BY_DIM = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DIM_BY_CONV = {conv: dim for dim, conv in _CONV_BY_DIM.items()}
_TRANSPOSED_CONV_BY_DIM = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL_BY_DIM = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL_BY_DIM = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_NORM_BY_NAME = {
    "instance": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "group": {1: nn.GroupNorm, 2: nn.GroupNorm, 3: nn.GroupNorm},
}
_DIM_BY_NORM = {
    norm: dim for by_dim in _NORM_BY_NAME.values() for dim, norm in by_dim.items() if norm is not nn.GroupNorm
}

#: Group count used for GroupNorm when `norm_op_kwargs` gives no `num_groups`; reduced to a divisor of the
#: channel count where needed.
DEFAULT_NUM_GROUPS = 8

POOL_KINDS = ("max_pool", "avg_pool")


def _locate(value: Any, argument: str) -> Any:
    """Return the object that a dotted path names, or `value` itself when it is not a string."""
    if not isinstance(value, str):
        return value

    located = pydoc.locate(value)
    if located is None:
        raise NetworkConfigError(
            f"{argument}={value!r} is not an importable dotted path. Give a class or a full dotted path such as "
            f"'torch.nn.modules.conv.Conv3d'."
        )
    return located


def resolve_conv_op(conv_op: Any) -> type[nn.Module]:
    """Resolve the convolution class.

    Args:
        conv_op: `torch.nn.Conv1d`, `Conv2d` or `Conv3d`, or the dotted path of one of them.

    Returns:
        The convolution class.

    Raises:
        NetworkConfigError: `conv_op` is not one of the three convolution classes.
    """
    resolved = _locate(conv_op, "conv_op")
    if resolved not in _DIM_BY_CONV:
        raise NetworkConfigError(
            f"conv_op={conv_op!r} is not supported. Allowed: torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d "
            f"(classes or dotted paths such as 'torch.nn.modules.conv.Conv3d')."
        )
    return resolved


def resolve_norm_op(norm_op: Any, dim: int) -> type[nn.Module] | None:
    """Resolve the normalisation class for a `dim`-dimensional network.

    Args:
        norm_op: None (no normalisation), a short name ("instance", "batch", "group"), a class or its dotted path.
        dim: Number of spatial dimensions of the network.

    Returns:
        The normalisation class, or None.

    Raises:
        NetworkConfigError: unknown name, or a norm class made for another number of dimensions.
    """
    if norm_op is None:
        return None

    if isinstance(norm_op, str) and norm_op.lower() in _NORM_BY_NAME:
        return _NORM_BY_NAME[norm_op.lower()][dim]

    if isinstance(norm_op, str) and pydoc.locate(norm_op) is None:
        raise NetworkConfigError(
            f"norm_op={norm_op!r} is neither a short name ({', '.join(map(repr, sorted(_NORM_BY_NAME)))}) nor an "
            f"importable dotted path such as 'torch.nn.modules.instancenorm.InstanceNorm{dim}d'."
        )

    resolved = _locate(norm_op, "norm_op")
    if resolved is nn.GroupNorm:
        return resolved

    if resolved not in _DIM_BY_NORM:
        raise NetworkConfigError(
            f"norm_op={norm_op!r} is not supported. Allowed: None, {sorted(_NORM_BY_NAME)} or the classes "
            f"torch.nn.InstanceNorm{dim}d, torch.nn.BatchNorm{dim}d, torch.nn.GroupNorm."
        )
    if _DIM_BY_NORM[resolved] != dim:
        raise NetworkConfigError(
            f"norm_op={resolved.__name__} is made for {_DIM_BY_NORM[resolved]}D inputs but conv_op is {dim}D. "
            f"Use the {dim}D variant or a short name such as 'instance'."
        )
    return resolved


def resolve_optional_layer(value: Any, argument: str) -> type[nn.Module] | None:
    """Resolve a dropout or nonlinearity class given as None, a class or a dotted path.

    Args:
        value: None, an `nn.Module` subclass or its dotted path.
        argument: Name of the keyword argument, used in error messages.

    Returns:
        The class, or None.

    Raises:
        NetworkConfigError: `value` does not name an `nn.Module` subclass.
    """
    if value is None:
        return None

    resolved = _locate(value, argument)
    if not (isinstance(resolved, type) and issubclass(resolved, nn.Module)):
        raise NetworkConfigError(
            f"{argument}={value!r} is not a torch.nn.Module subclass. Give a class such as torch.nn.LeakyReLU, "
            f"its dotted path, or None."
        )
    return resolved


def _check_kwargs(layer: type[nn.Module], kwargs: Mapping[str, Any], argument: str, *args: Any) -> None:
    """Build `layer` once so that bad keyword arguments fail at construction with a clear message."""
    try:
        layer(*args, **kwargs)
    except TypeError as error:
        raise NetworkConfigError(
            f"{argument}={dict(kwargs)!r} is not accepted by {layer.__name__}: {error}. "
            f"Remove or rename the offending keys."
        ) from error


@dataclass(frozen=True)
class LayerSpec:
    """Layer classes and their settings, shared by every block of one network.

    Attributes:
        conv_op: Convolution class; fixes the number of spatial dimensions.
        norm_op: Normalisation class, or None for no normalisation.
        norm_kwargs: Keyword arguments of `norm_op` (for GroupNorm, optionally `num_groups`).
        dropout_op: Dropout class, or None.
        dropout_kwargs: Keyword arguments of `dropout_op`.
        nonlin: Nonlinearity class, or None for the identity.
        nonlin_kwargs: Keyword arguments of `nonlin`.
        conv_bias: Whether the main-path convolutions have a bias.
    """

    conv_op: type[nn.Module]
    norm_op: type[nn.Module] | None = None
    norm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dropout_op: type[nn.Module] | None = None
    dropout_kwargs: Mapping[str, Any] = field(default_factory=dict)
    nonlin: type[nn.Module] | None = None
    nonlin_kwargs: Mapping[str, Any] = field(default_factory=dict)
    conv_bias: bool = True

    @classmethod
    def from_arguments(
        cls,
        conv_op: Any,
        norm_op: Any = None,
        norm_op_kwargs: Mapping[str, Any] | None = None,
        dropout_op: Any = None,
        dropout_op_kwargs: Mapping[str, Any] | None = None,
        nonlin: Any = None,
        nonlin_kwargs: Mapping[str, Any] | None = None,
        conv_bias: bool = True,
    ) -> LayerSpec:
        """Resolve the network's layer arguments (classes, dotted paths or short names) and check their kwargs.

        Args:
            conv_op: See `resolve_conv_op`.
            norm_op: See `resolve_norm_op`.
            norm_op_kwargs: Keyword arguments of the norm; None means none.
            dropout_op: Dropout class or dotted path, or None.
            dropout_op_kwargs: Keyword arguments of the dropout; None means none.
            nonlin: Nonlinearity class or dotted path, or None.
            nonlin_kwargs: Keyword arguments of the nonlinearity; None means none.
            conv_bias: Whether the main-path convolutions have a bias.

        Returns:
            The resolved spec.

        Raises:
            NetworkConfigError: an unknown layer or keyword arguments that the layer rejects.
        """
        conv = resolve_conv_op(conv_op)
        spec = cls(
            conv_op=conv,
            norm_op=resolve_norm_op(norm_op, _DIM_BY_CONV[conv]),
            norm_kwargs=dict(norm_op_kwargs or {}),
            dropout_op=resolve_optional_layer(dropout_op, "dropout_op"),
            dropout_kwargs=dict(dropout_op_kwargs or {}),
            nonlin=resolve_optional_layer(nonlin, "nonlin"),
            nonlin_kwargs=dict(nonlin_kwargs or {}),
            conv_bias=bool(conv_bias),
        )

        if spec.norm_op is not None:
            # A channel count equal to the group count passes the GroupNorm divisibility check, so this call
            # checks only the keyword arguments.
            spec.make_norm(spec.norm_kwargs.get("num_groups") or DEFAULT_NUM_GROUPS)
        if spec.dropout_op is not None:
            _check_kwargs(spec.dropout_op, spec.dropout_kwargs, "dropout_op_kwargs")
        if spec.nonlin is not None:
            _check_kwargs(spec.nonlin, spec.nonlin_kwargs, "nonlin_kwargs")
        return spec

    @property
    def dim(self) -> int:
        """Number of spatial dimensions."""
        return _DIM_BY_CONV[self.conv_op]

    def make_conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int] | int = 1,
        bias: bool | None = None,
    ) -> nn.Module:
        """Build a convolution with "same" padding, so the output size is the input size divided by the stride.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            kernel_size: Per-axis kernel size (odd sizes keep the spatial size).
            stride: Per-axis stride or one stride for all axes.
            bias: Whether to add a bias; None uses `conv_bias`.

        Returns:
            The convolution module.
        """
        padding = [(k - 1) // 2 for k in kernel_size]
        return self.conv_op(
            in_channels,
            out_channels,
            kernel_size=list(kernel_size),
            stride=stride,
            padding=padding,
            bias=self.conv_bias if bias is None else bias,
        )

    def make_norm(self, channels: int) -> nn.Module:
        """Build the normalisation layer for `channels` channels, or `nn.Identity` when there is none.

        Raises:
            NetworkConfigError: the norm rejects its kwargs, or an explicit GroupNorm `num_groups` does not
                divide `channels`.
        """
        if self.norm_op is None:
            return nn.Identity()

        kwargs = dict(self.norm_kwargs)
        if self.norm_op is not nn.GroupNorm:
            _check_kwargs(self.norm_op, kwargs, "norm_op_kwargs", channels)
            return self.norm_op(channels, **kwargs)

        num_groups = kwargs.pop("num_groups", None)
        if num_groups is None:
            num_groups = math.gcd(channels, DEFAULT_NUM_GROUPS)
        elif channels % num_groups != 0:
            raise NetworkConfigError(
                f"norm_op_kwargs num_groups={num_groups} does not divide {channels} channels. Choose a group "
                f"count that divides every stage's channel count, or leave num_groups out to pick one per layer."
            )
        _check_kwargs(nn.GroupNorm, kwargs, "norm_op_kwargs", num_groups, channels)
        return nn.GroupNorm(num_groups, channels, **kwargs)

    def make_nonlin(self) -> nn.Module:
        """Build the nonlinearity, or `nn.Identity` when there is none."""
        if self.nonlin is None:
            return nn.Identity()
        return self.nonlin(**self.nonlin_kwargs)

    def make_dropout(self) -> nn.Module:
        """Build the dropout layer, or `nn.Identity` when there is none."""
        if self.dropout_op is None:
            return nn.Identity()
        return self.dropout_op(**self.dropout_kwargs)

    def make_pool(self, kind: str, stride: Sequence[int]) -> nn.Module:
        """Build a pooling layer whose kernel equals its stride.

        Args:
            kind: "max_pool" or "avg_pool".
            stride: Per-axis stride.
        """
        table = _MAX_POOL_BY_DIM if kind == "max_pool" else _AVG_POOL_BY_DIM
        return table[self.dim](kernel_size=list(stride), stride=list(stride))

    def make_transposed_conv(self, in_channels: int, out_channels: int, stride: Sequence[int]) -> nn.Module:
        """Build a transposed convolution that upsamples by `stride` (kernel size equal to the stride)."""
        return _TRANSPOSED_CONV_BY_DIM[self.dim](
            in_channels, out_channels, kernel_size=list(stride), stride=list(stride), bias=self.conv_bias
        )
