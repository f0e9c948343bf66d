"""Experiment planner that writes plans for the plugin's residual-encoder U-Net.

The planner subclasses nnU-Net's ``ExperimentPlanner`` and keeps its fingerprint handling, target spacing,
transposition, normalisation, resampling and 3d_lowres logic. It replaces the per-configuration step. The network
topology comes from ``topology``. The patch and batch size come from the measured memory model in ``memory``, or
in compute-aware mode from timed training steps in ``compute_aware``. The architecture written into the plans is
``nnunet_resenc_plugin.networks.resenc_unet.ResEncUNet``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Mapping, Tuple, Union

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_resenc_plugin.errors import PlanningError
from nnunet_resenc_plugin.planning.memory import MemoryModel
from nnunet_resenc_plugin.planning.presets import BlockOptions, Preset, get_preset, parse_block_options
from nnunet_resenc_plugin.planning.topology import (
    Topology,
    compute_topology,
    initial_patch_size,
    log_topology_choice,
    shrink_patch,
)

logger = logging.getLogger(__name__)

NETWORK_CLASS_NAME = "nnunet_resenc_plugin.networks.resenc_unet.ResEncUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

# nnU-Net's smallest batch: instance norm statistics and the Dice loss are noisy with one sample.
MIN_BATCH_SIZE = 2
# At most this fraction of the dataset's voxels in one batch (nnU-Net's default planner rule, which its ResEnc
# presets drop). It stops small datasets from getting one huge batch per step.
MAX_DATASET_FRACTION_PER_BATCH = 0.05
# Cap on 2D batch sizes. nnU-Net's default planner calibrates its 2D memory reference at batch 12; without a cap,
# large memory targets on small 2D images plan batches in the hundreds, which only cuts the number of optimizer
# steps per epoch.
MAX_BATCH_SIZE_2D = 64

# nnU-Net's preprocessing inputs that the plugin keeps identical to the default planner, which lets the 2d and
# 3d_fullres configurations reuse the default planner's preprocessed data.
DEFAULT_DATA_PLANS = "nnUNetPlans"


def _norm_dotted_path(norm: str, dimension: int) -> str:
    if norm == "instance":
        return f"torch.nn.modules.instancenorm.InstanceNorm{dimension}d"
    if norm == "batch":
        return f"torch.nn.modules.batchnorm.BatchNorm{dimension}d"
    return "torch.nn.modules.normalization.GroupNorm"


def build_arch_kwargs(topology: Topology, preset: Preset, options: BlockOptions) -> dict[str, Any]:
    """Build the JSON ``arch_kwargs`` of ``ResEncUNet`` for a topology, preset and block options.

    Args:
        topology: Stage layout from ``topology.compute_topology``.
        preset: Width and depth preset.
        options: Block options selected at planning time.
    """
    dimension = len(topology.patch_size)
    n_stages = topology.n_stages
    return {
        "n_stages": n_stages,
        "features_per_stage": preset.features_per_stage(n_stages, dimension),
        "conv_op": f"torch.nn.modules.conv.Conv{dimension}d",
        "kernel_sizes": [list(kernel) for kernel in topology.kernel_sizes],
        "strides": [list(stride) for stride in topology.strides],
        "n_blocks_per_stage": preset.encoder_blocks(n_stages),
        "n_conv_per_stage_decoder": [preset.decoder_convs_per_stage] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": _norm_dotted_path(options.norm, dimension),
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        "block": options.block,
        "downsampling": options.downsampling,
        "shortcut": options.shortcut,
        "squeeze_excitation": options.squeeze_excitation,
        "stochastic_depth": options.stochastic_depth,
        "zero_init_residual": options.zero_init_residual,
    }


def architecture_entry(arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap ``arch_kwargs`` in the ``architecture`` record of an nnU-Net plans configuration."""
    return {
        "network_class_name": NETWORK_CLASS_NAME,
        "arch_kwargs": dict(arch_kwargs),
        "_kw_requires_import": list(REQUIRES_IMPORT),
    }


def cap_batch_size(batch_size: int, patch_size: Tuple[int, ...], approximate_n_voxels_dataset: float) -> int:
    """Apply the dataset-fraction cap, the 2D cap and the minimum batch size, in that order.

    Args:
        batch_size: Largest batch that fits the memory or time budget.
        patch_size: Planned patch size; 2 entries mean a 2D configuration.
        approximate_n_voxels_dataset: Voxels of all training images at the configuration's spacing.
    """
    dataset_cap = int(round(approximate_n_voxels_dataset * MAX_DATASET_FRACTION_PER_BATCH
                            / math.prod(int(size) for size in patch_size)))
    capped = min(batch_size, dataset_cap)
    if len(patch_size) == 2:
        capped = min(capped, MAX_BATCH_SIZE_2D)
    return max(capped, MIN_BATCH_SIZE)


class ResEncPluginPlanner(ExperimentPlanner):
    """nnU-Net experiment planner for ``ResEncUNet`` with presets, block options and a measured memory model.

    Args:
        dataset_name_or_id: nnU-Net dataset name or id.
        gpu_memory_target_in_gb: Peak training memory to plan for, in GB; None uses the preset's target.
        preprocessor_name: nnU-Net preprocessor class name.
        plans_name: Plans identifier; None uses the preset's default, for example ``nnUNetPluginResEncMPlans``.
        overwrite_target_spacing: Fixed 3d_fullres spacing instead of nnU-Net's choice.
        suppress_transpose: Keep the axis order of the images.
        preset: ``S``, ``M``, ``L`` or ``XL``.
        block_options: Block options by name (``norm``, ``block``, ``downsampling``, ``shortcut``,
            ``squeeze_excitation``, ``stochastic_depth``, ``zero_init_residual``).
        device: None plans for a CUDA GPU by memory alone. ``cpu`` or ``cuda`` turns on the compute-aware mode,
            which times training steps on that device.
        seconds_per_iteration: Time budget per training iteration for the compute-aware mode; giving it without
            ``device`` times on the CPU.
        timed_configurations: Configurations that the compute-aware mode times; None times all of them.
    """

    def __init__(
        self,
        dataset_name_or_id: Union[str, int],
        gpu_memory_target_in_gb: float | None = None,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str | None = None,
        overwrite_target_spacing: Union[List[float], Tuple[float, ...], None] = None,
        suppress_transpose: bool = False,
        preset: str = "M",
        block_options: Mapping[str, Any] | None = None,
        device: str | None = None,
        seconds_per_iteration: float | None = None,
        timed_configurations: Union[List[str], Tuple[str, ...], None] = None,
    ) -> None:
        self.preset = get_preset(preset)
        self.block_options = parse_block_options(block_options)
        memory_gb = self.preset.gpu_memory_gb if gpu_memory_target_in_gb is None else float(gpu_memory_target_in_gb)
        if not memory_gb > 0:
            raise PlanningError(f"GPU memory target must be a positive number of GB, got {gpu_memory_target_in_gb}.")
        super().__init__(dataset_name_or_id, memory_gb, preprocessor_name, plans_name or self.preset.plans_name(),
                         overwrite_target_spacing, suppress_transpose)
        from nnunet_resenc_plugin.planning.compute_aware import ComputeBudget, resolve_precision

        self.compute_budget = ComputeBudget.from_options(device, seconds_per_iteration)
        self.timed_configurations = None if timed_configurations is None else set(timed_configurations)
        self.precision = resolve_precision(self.compute_budget.device if self.compute_budget else "cuda")
        self.memory_model = MemoryModel(self.precision)
        self.planned_estimates: dict[str, float] = {}

    def generate_data_identifier(self, configuration_name: str) -> str:
        """Return the folder name of the preprocessed data of a configuration.

        2d and 3d_fullres reuse nnU-Net's default data (``nnUNetPlans_2d``, ``nnUNetPlans_3d_fullres``) when the
        spacing, transposition and preprocessor are the default planner's, because the plugin preprocesses them
        identically. 3d_lowres depends on the planned patch size and gets its own folder.
        """
        identical = (self.overwrite_target_spacing is None and not self.suppress_transpose
                     and self.preprocessor_name == "DefaultPreprocessor")
        if identical and configuration_name in ("2d", "3d_fullres"):
            return f"{DEFAULT_DATA_PLANS}_{configuration_name}"
        return f"{self.plans_identifier}_{configuration_name}"

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        """Plan one configuration: topology, patch size, batch size and architecture.

        Overrides nnU-Net's method with the same arguments; ``_cache`` is unused because the memory model keeps
        its own cache per topology.
        """
        configuration = data_identifier[len(self.plans_identifier) + 1:] \
            if data_identifier.startswith(self.plans_identifier + "_") \
            else data_identifier[len(DEFAULT_DATA_PLANS) + 1:]
        # nnU-Net's lowres loop does arithmetic on the returned spacing, so the record keeps the given array.
        spacing_record = spacing
        spacing = [float(s) for s in spacing]
        median_shape = [float(s) for s in median_shape[:len(spacing)]]
        input_channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        num_classes = len(self.dataset_json["labels"])
        target_bytes = self.UNet_vram_target_GB * 1e9

        topology = compute_topology(spacing, initial_patch_size(spacing, median_shape))
        batch_size = 0
        while True:
            arch_kwargs = build_arch_kwargs(topology, self.preset, self.block_options)
            batch_size = self.memory_model.max_batch_size(target_bytes, NETWORK_CLASS_NAME, arch_kwargs,
                                                          REQUIRES_IMPORT, input_channels, num_classes,
                                                          topology.patch_size)
            if batch_size >= MIN_BATCH_SIZE:
                break
            smaller = shrink_patch(topology, spacing, median_shape)
            if smaller is None:
                logger.warning("%s: even the smallest patch %s does not fit %.1f GB at batch %d; planning it "
                               "anyway.", configuration, list(topology.patch_size), self.UNet_vram_target_GB,
                               MIN_BATCH_SIZE)
                break
            topology = smaller

        if self.compute_budget is not None and (self.timed_configurations is None
                                                or configuration in self.timed_configurations):
            topology, batch_size = self.compute_budget.fit(
                topology, batch_size, spacing, median_shape, input_channels, num_classes,
                lambda candidate: build_arch_kwargs(candidate, self.preset, self.block_options),
                self.memory_model, target_bytes, self.precision, configuration)
            arch_kwargs = build_arch_kwargs(topology, self.preset, self.block_options)

        planned_batch = cap_batch_size(batch_size, topology.patch_size, approximate_n_voxels_dataset)
        if planned_batch != batch_size:
            logger.info("%s: batch size %d capped to %d (at most %d%% of the dataset per batch, at least %d%s).",
                        configuration, batch_size, planned_batch, int(MAX_DATASET_FRACTION_PER_BATCH * 100),
                        MIN_BATCH_SIZE, f", 2D at most {MAX_BATCH_SIZE_2D}" if len(spacing) == 2 else "")
        estimate = self.memory_model.estimate(NETWORK_CLASS_NAME, arch_kwargs, REQUIRES_IMPORT, input_channels,
                                              num_classes, topology.patch_size, planned_batch)
        self.planned_estimates[configuration] = round(estimate.total_gb, 3)
        log_topology_choice(topology, median_shape, configuration)
        logger.info("%s: %s, batch %d, estimated peak %.2f GB (%s).", configuration, topology.describe(),
                    planned_batch, estimate.total_gb, self.precision)
        return self._configuration_record(topology, planned_batch, median_shape, spacing_record,
                                          data_identifier, arch_kwargs)

    def _configuration_record(self, topology: Topology, batch_size: int, median_shape, spacing,
                              data_identifier: str, arch_kwargs: dict) -> dict:
        resampling_data, data_kwargs, resampling_seg, seg_kwargs = self.determine_resampling()
        resampling_probabilities, probabilities_kwargs = self.determine_segmentation_softmax_export_fn()
        normalization_schemes, use_mask_for_norm = \
            self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        return {
            "data_identifier": data_identifier,
            "preprocessor_name": self.preprocessor_name,
            "batch_size": int(batch_size),
            "patch_size": [int(size) for size in topology.patch_size],
            "median_image_size_in_voxels": [float(size) for size in median_shape],
            "spacing": spacing,
            "normalization_schemes": normalization_schemes,
            "use_mask_for_norm": use_mask_for_norm,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": data_kwargs,
            "resampling_fn_seg_kwargs": seg_kwargs,
            "resampling_fn_probabilities": resampling_probabilities.__name__,
            "resampling_fn_probabilities_kwargs": probabilities_kwargs,
            "architecture": architecture_entry(arch_kwargs),
        }

    def save_plans(self, plans: dict) -> None:
        """Record the plugin settings and memory estimates under ``resenc_plugin``, then save as nnU-Net does."""
        plans["resenc_plugin"] = {
            "preset": self.preset.name,
            "gpu_memory_target_gb": self.UNet_vram_target_GB,
            "precision": self.precision,
            "block_options": {
                "norm": self.block_options.norm,
                "block": self.block_options.block,
                "downsampling": self.block_options.downsampling,
                "shortcut": self.block_options.shortcut,
                "squeeze_excitation": self.block_options.squeeze_excitation,
                "stochastic_depth": self.block_options.stochastic_depth,
                "zero_init_residual": self.block_options.zero_init_residual,
            },
            "compute_budget": None if self.compute_budget is None else self.compute_budget.as_dict(),
            "estimated_peak_memory_gb": dict(self.planned_estimates),
        }
        super().save_plans(plans)
