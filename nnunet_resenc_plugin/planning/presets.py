"""Planner presets (S, M, L, XL) and the block options a plan can select.

A preset is data, not a planner subclass: one frozen record per name with the memory target and the network
width and depth. The planner reads the record and plans every dataset the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from nnunet_resenc_plugin.errors import PlanningError

# Encoder residual blocks per resolution stage; stages beyond the tuple repeat its last value.
_BLOCKS_SMALL = (1, 2, 3, 4, 4, 4, 4)
_BLOCKS_STANDARD = (1, 3, 4, 6, 6, 6, 6)


@dataclass(frozen=True)
class Preset:
    """One row of the preset table.

    Attributes:
        name: Preset name as given on the command line (``S``, ``M``, ``L``, ``XL``).
        gpu_memory_gb: Peak training memory the planner aims for, in GB (10**9 bytes), unless the caller gives
            another target.
        base_features: Feature maps of the first stage; each later stage doubles it up to the maximum.
        max_features_2d: Cap on feature maps per stage for 2D networks.
        max_features_3d: Cap on feature maps per stage for 3D networks.
        blocks_per_stage: Residual blocks per encoder stage.
        decoder_convs_per_stage: Convolutions per decoder stage.
    """

    name: str
    gpu_memory_gb: float
    base_features: int
    max_features_2d: int
    max_features_3d: int
    blocks_per_stage: tuple[int, ...]
    decoder_convs_per_stage: int = 1

    def plans_name(self) -> str:
        """Return the default plans identifier, following nnU-Net's ``nnUNet...Plans`` pattern."""
        return f"nnUNetPluginResEnc{self.name}Plans"

    def features_per_stage(self, n_stages: int, dimension: int) -> list[int]:
        """Return the feature maps of each stage for a network with ``n_stages`` stages.

        Args:
            n_stages: Number of resolution stages.
            dimension: 2 or 3, which selects the feature cap.
        """
        cap = self.max_features_2d if dimension == 2 else self.max_features_3d
        return [min(cap, self.base_features * 2**stage) for stage in range(n_stages)]

    def encoder_blocks(self, n_stages: int) -> list[int]:
        """Return the residual blocks of each encoder stage for ``n_stages`` stages."""
        blocks = list(self.blocks_per_stage[:n_stages])
        blocks += [self.blocks_per_stage[-1]] * (n_stages - len(blocks))
        return blocks


# The M, L and XL memory targets and block counts are those of nnU-Net 2.8.1's ResEnc presets
# (nnUNetPlannerResEncM/L/XL). S is the plugin's own smaller preset for 4 GB cards and CPUs.
PRESETS: Mapping[str, Preset] = {
    "S": Preset("S", gpu_memory_gb=4.0, base_features=24, max_features_2d=384, max_features_3d=256,
                blocks_per_stage=_BLOCKS_SMALL),
    "M": Preset("M", gpu_memory_gb=8.0, base_features=32, max_features_2d=512, max_features_3d=320,
                blocks_per_stage=_BLOCKS_STANDARD),
    "L": Preset("L", gpu_memory_gb=24.0, base_features=32, max_features_2d=512, max_features_3d=320,
                blocks_per_stage=_BLOCKS_STANDARD),
    "XL": Preset("XL", gpu_memory_gb=40.0, base_features=32, max_features_2d=512, max_features_3d=320,
                 blocks_per_stage=_BLOCKS_STANDARD),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name, case-insensitively.

    Args:
        name: ``S``, ``M``, ``L`` or ``XL``.

    Raises:
        PlanningError: If ``name`` is not in the table.
    """
    preset = PRESETS.get(str(name).upper())
    if preset is None:
        raise PlanningError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}. Pass one of them with --preset."
        )
    return preset


# Block options selectable at planning time: option name -> allowed values (None means any float in range).
CHOICE_OPTIONS: Mapping[str, tuple[Any, ...]] = {
    "norm": ("instance", "batch", "group"),
    "block": ("basic", "bottleneck"),
    "downsampling": ("conv", "max_pool", "avg_pool"),
    "shortcut": ("avg_pool_conv", "conv"),
    "squeeze_excitation": (False, True),
    "zero_init_residual": (False, True),
}
FLOAT_OPTIONS: Mapping[str, tuple[float, float]] = {
    # Inclusive lower and exclusive upper bound.
    "stochastic_depth": (0.0, 1.0),
}


@dataclass(frozen=True)
class BlockOptions:
    """Block options written into the plans' ``arch_kwargs``.

    Attributes:
        norm: Normalisation layer, ``instance``, ``batch`` or ``group``.
        block: Residual block type, ``basic`` (two 3x3 convolutions) or ``bottleneck``.
        downsampling: How a stage reduces resolution: strided ``conv`` or a pooling layer.
        shortcut: Projection on the residual path when the shape changes.
        squeeze_excitation: Whether each block ends with squeeze-and-excitation.
        stochastic_depth: Maximum drop-path rate, reached by the deepest block.
        zero_init_residual: Whether every residual block starts as its shortcut (last norm of the branch set to
            zero), as in nnU-Net's own ResEnc presets. Off by default because it delays the start of learning.
    """

    norm: str = "instance"
    block: str = "basic"
    downsampling: str = "conv"
    shortcut: str = "avg_pool_conv"
    squeeze_excitation: bool = False
    stochastic_depth: float = 0.0
    zero_init_residual: bool = False

    def is_stock_equivalent(self) -> bool:
        """Return whether these options build the same layers as nnU-Net's own ResidualEncoderUNet.

        Initialisation does not change the layers, so ``zero_init_residual`` is not compared.
        """
        return replace(self, zero_init_residual=False) == BlockOptions()


def parse_block_options(options: Mapping[str, Any] | None) -> BlockOptions:
    """Check block options given by name and return them as a ``BlockOptions`` record.

    Args:
        options: Option name to value, for example ``{"norm": "batch", "stochastic_depth": 0.1}``.

    Raises:
        PlanningError: On an unknown option name or a value outside the allowed set or range.
    """
    options = dict(options or {})
    valid_names = sorted([*CHOICE_OPTIONS, *FLOAT_OPTIONS])
    values: dict[str, Any] = {}
    for name, value in options.items():
        if name in CHOICE_OPTIONS:
            allowed = CHOICE_OPTIONS[name]
            if isinstance(value, str) and isinstance(allowed[0], bool):
                value = value.lower() in ("1", "true", "yes", "on")
            if value not in allowed:
                raise PlanningError(
                    f"Invalid value {value!r} for block option {name!r}. Allowed values: "
                    f"{', '.join(str(item) for item in allowed)}."
                )
            values[name] = value
        elif name in FLOAT_OPTIONS:
            low, high = FLOAT_OPTIONS[name]
            try:
                number = float(value)
            except (TypeError, ValueError) as error:
                raise PlanningError(f"Block option {name!r} must be a number, got {value!r}.") from error
            if not low <= number < high:
                raise PlanningError(f"Block option {name!r} must be in [{low}, {high}), got {number}.")
            values[name] = number
        else:
            raise PlanningError(f"Unknown block option {name!r}. Valid options: {', '.join(valid_names)}.")
    return BlockOptions(**values)
