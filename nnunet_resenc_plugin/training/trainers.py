"""nnU-Net trainers for the residual-encoder U-Net.

The trainers subclass nnU-Net's ``nnUNetTrainer`` and override only these hooks:

- ``__init__``: applies the iteration counts from the environment (see :mod:`.settings`) and the epoch count
  of the short-schedule variants.
- ``initialize``: validates the plans before nnU-Net builds the network from them.
- ``_get_deep_supervision_scales`` and ``_build_loss``: turn deep supervision off when the network has fewer
  than two decoder outputs, where nnU-Net's loss weights would be NaN (one output) or crash (none).
- ``train_step`` and ``validation_step``: bfloat16 autocast on CPUs with native bf16 support.
- ``on_train_start``: loads ``nnUNet_resenc_pretrained_weights`` for a new training.

The network is built by nnU-Net's own ``build_network_architecture`` from the class path in the plans, so
inference, which calls that static method, needs nothing from the plugin but the class name.
"""

from __future__ import annotations

import logging

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_resenc_plugin.training import precision, settings
from nnunet_resenc_plugin.training.pretrained import load_pretrained

logger = logging.getLogger(__name__)

__all__ = [
    "nnUNetTrainerResEnc",
    "nnUNetTrainerResEnc_1epoch",
    "nnUNetTrainerResEnc_5epochs",
    "nnUNetTrainerResEnc_10epochs",
    "nnUNetTrainerResEnc_50epochs",
    "nnUNetTrainerResEnc_100epochs",
    "nnUNetTrainerResEnc_250epochs",
]

# Gradient-norm limit of nnU-Net's train_step (nnunetv2 2.8.1), repeated by the bfloat16 path.
_GRAD_CLIP_NORM = 12


class nnUNetTrainerResEnc(nnUNetTrainer):
    """Trainer for plans whose architecture is the plugin's ``ResEncUNet``.

    Args:
        plans: Plans dictionary; must contain the ``continue_training`` key that nnU-Net's entry points add.
        configuration: Configuration name in the plans, for example ``3d_fullres``.
        fold: Cross-validation fold, or ``"all"``.
        dataset_json: Content of the dataset's ``dataset.json``.
        device: Training device.
    """

    # Epoch count of a short-schedule variant; None keeps nnU-Net's 1000 epochs.
    schedule_epochs: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.schedule_epochs is not None:
            self.num_epochs = self.schedule_epochs
        iterations = settings.read_positive_int(settings.ITERATIONS_ENV)
        if iterations is not None:
            self.num_iterations_per_epoch = iterations
        val_iterations = settings.read_positive_int(settings.VAL_ITERATIONS_ENV)
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = val_iterations
        self.cpu_bf16 = precision.use_cpu_bf16(self.device)
        self.print_to_log_file(
            f"Plugin trainer: {self.num_epochs} epochs of {self.num_iterations_per_epoch} training and "
            f"{self.num_val_iterations_per_epoch} validation iterations, "
            f"CPU bfloat16 autocast {'on' if self.cpu_bf16 else 'off'}.",
            also_print_to_console=True,
        )

    def initialize(self) -> None:
        """Validate the plans, then let nnU-Net build the network, optimizer and loss."""
        if not self.was_initialized:
            self._validate_plans()
            self._resolve_deep_supervision()
        super().initialize()

    def _validate_plans(self) -> None:
        from nnunet_resenc_plugin.planning.validation import validate_plans

        validate_plans(self.plans_manager.plans, self.configuration_name)

    def _num_decoder_outputs(self) -> int:
        """Return the number of segmentation outputs with deep supervision on (one per decoder stage)."""
        return len(self.configuration_manager.pool_op_kernel_sizes) - 1

    def _resolve_deep_supervision(self) -> None:
        """Turn deep supervision off when the network has fewer than two decoder outputs.

        nnU-Net gives the lowest-resolution output the weight 0 and normalises the weights, so one output gives
        0/0 = NaN and no output raises an IndexError. With fewer than two outputs there is nothing for deep
        supervision to add, so the full-resolution loss alone is used.
        """
        if self.enable_deep_supervision and self._num_decoder_outputs() < 2:
            self.enable_deep_supervision = False
            self.print_to_log_file(
                f"Deep supervision turned off: the network has {self._num_decoder_outputs() + 1} resolution "
                f"stages, and deep supervision needs at least 3.", also_print_to_console=True)

    def _get_deep_supervision_scales(self):
        self._resolve_deep_supervision()
        return super()._get_deep_supervision_scales()

    def _build_loss(self):
        self._resolve_deep_supervision()
        return super()._build_loss()

    def train_step(self, batch: dict) -> dict:
        """Run one training step; under bfloat16 autocast on the CPU, otherwise as nnU-Net does."""
        if not self.cpu_bf16:
            return super().train_step(batch)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [item.to(self.device, non_blocking=True) for item in target]
        else:
            target = target.to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        with precision.cpu_autocast(True):
            output = self.network(data)

        # The loss runs in float32 because softmax and the Dice sums need more than bfloat16's 8-bit mantissa.
        loss = self.loss(precision.to_float32(output), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), _GRAD_CLIP_NORM)
        self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        """Run nnU-Net's validation step, under bfloat16 autocast when training uses it."""
        with precision.cpu_autocast(self.cpu_bf16):
            return super().validation_step(batch)

    def on_train_start(self) -> None:
        """Prepare training as nnU-Net does, then load pretrained weights for a training at epoch 0."""
        super().on_train_start()
        path = settings.read_path(settings.PRETRAINED_ENV)
        if path is None:
            return
        if self.current_epoch > 0:
            self.print_to_log_file(f"{settings.PRETRAINED_ENV} ignored: resuming at epoch {self.current_epoch}.")
            return
        encoder_only = settings.read_flag(settings.ENCODER_ONLY_ENV)
        loaded = load_pretrained(self.network, path, encoder_only=encoder_only)
        self.print_to_log_file(f"Loaded {len(loaded)} pretrained weights from {path}"
                               f"{' (encoder only)' if encoder_only else ''}.")


class nnUNetTrainerResEnc_1epoch(nnUNetTrainerResEnc):
    """Plugin trainer with 1 epoch, for smoke tests."""

    schedule_epochs = 1


class nnUNetTrainerResEnc_5epochs(nnUNetTrainerResEnc):
    """Plugin trainer with 5 epochs."""

    schedule_epochs = 5


class nnUNetTrainerResEnc_10epochs(nnUNetTrainerResEnc):
    """Plugin trainer with 10 epochs."""

    schedule_epochs = 10


class nnUNetTrainerResEnc_50epochs(nnUNetTrainerResEnc):
    """Plugin trainer with 50 epochs."""

    schedule_epochs = 50


class nnUNetTrainerResEnc_100epochs(nnUNetTrainerResEnc):
    """Plugin trainer with 100 epochs."""

    schedule_epochs = 100


class nnUNetTrainerResEnc_250epochs(nnUNetTrainerResEnc):
    """Plugin trainer with 250 epochs."""

    schedule_epochs = 250
