"""Start a training from a pretrained checkpoint, whole or encoder only.

nnU-Net's ``-pretrained_weights`` option loads a checkpoint only when every key except the segmentation layers'
(``.seg_layers.``) matches in name and shape, and it reports a mismatch by printing the network's tensor. This
module loads plugin checkpoints and checkpoints of stock nnU-Net ResEnc presets (converted with
:mod:`nnunet_resenc_plugin.networks.conversion`), can restrict loading to the encoder, and reports mismatches as
shapes per key.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import torch
from torch import nn

from nnunet_resenc_plugin.errors import CheckpointConversionError
from nnunet_resenc_plugin.networks.decoder import LEGACY_SEG_LAYERS_NAME

logger = logging.getLogger(__name__)

# Key prefixes of the segmentation output layers, the same in plugin and stock state dicts. Their shape depends
# on the number of classes, so they are never loaded, as nnU-Net's own -pretrained_weights does.
SEGMENTATION_KEY_PREFIXES: tuple[str, ...] = ("decoder.seg_layers.",)
_LEGACY_SEGMENTATION_KEY_PREFIX = f"decoder.{LEGACY_SEG_LAYERS_NAME}."
ENCODER_PREFIX = "encoder."
# Key fragments that only dynamic-network-architectures' ResidualEncoderUNet state dicts contain.
_STOCK_KEY_MARKERS: tuple[str, ...] = (".all_modules.", "decoder.encoder.", "decoder.transpconvs.",
                                       "encoder.stem.convs.")
# Maximum number of mismatched keys that an error message lists.
_MAX_LISTED_KEYS = 20


def read_checkpoint_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the network weights from an nnU-Net checkpoint file.

    Args:
        path: A ``.pth`` file written by nnU-Net (``network_weights`` entry) or a bare state dict.

    Returns:
        The state dict, on the CPU, without DDP or torch.compile prefixes and with the segmentation layers of
        older plugin checkpoints (``decoder.heads.``) renamed to ``decoder.seg_layers.``.

    Raises:
        CheckpointConversionError: If the file is missing or contains no state dict.
    """
    if not os.path.isfile(path):
        raise CheckpointConversionError(f"Checkpoint {str(path)!r} not found. Pass the path of a .pth file "
                                        f"written by nnU-Net, for example fold_0/checkpoint_final.pth.")
    # nnU-Net checkpoints store numpy values and the trainer name next to the weights, so weights_only loading
    # rejects them. Load only checkpoints you trust.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(checkpoint, Mapping) and "network_weights" in checkpoint:
        checkpoint = checkpoint["network_weights"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointConversionError(f"{str(path)!r} contains no state dict: expected an nnU-Net checkpoint with "
                                        f"a 'network_weights' entry or a mapping of names to tensors.")
    weights = {_strip_wrapper_prefixes(key): value for key, value in checkpoint.items()}
    return {_rename_legacy_segmentation_key(key): value for key, value in weights.items()}


def _strip_wrapper_prefixes(key: str) -> str:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes from a state-dict key."""
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _rename_legacy_segmentation_key(key: str) -> str:
    """Rename a ``decoder.heads.`` key of an older plugin checkpoint to ``decoder.seg_layers.``."""
    if key.startswith(_LEGACY_SEGMENTATION_KEY_PREFIX):
        return SEGMENTATION_KEY_PREFIXES[0] + key[len(_LEGACY_SEGMENTATION_KEY_PREFIX):]
    return key


def unwrap_network(network: nn.Module) -> nn.Module:
    """Return the plain module inside DistributedDataParallel and torch.compile wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)


def is_stock_state_dict(weights: Mapping[str, torch.Tensor]) -> bool:
    """Return whether ``weights`` uses the key names of dynamic-network-architectures' ResidualEncoderUNet."""
    return any(marker in key for key in weights for marker in _STOCK_KEY_MARKERS)


def to_plugin_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert stock ResEnc weights to plugin key names; plugin weights are returned unchanged.

    Raises:
        CheckpointConversionError: If stock weights contain keys that the conversion does not know.
    """
    if not is_stock_state_dict(weights):
        return weights
    from nnunet_resenc_plugin.networks.conversion import stock_to_plugin_state_dict

    logger.info("Checkpoint keys do not match the plugin network, converting from stock nnU-Net ResEnc keys")
    return stock_to_plugin_state_dict(weights)


def select_weights(weights: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   encoder_only: bool) -> dict[str, torch.Tensor]:
    """Pick the checkpoint entries to load into ``target``, checking keys and shapes.

    Args:
        weights: Checkpoint state dict with plugin key names.
        target: State dict of the receiving network.
        encoder_only: Load only keys under ``encoder.``; decoder keys may then differ freely.

    Returns:
        The entries to load. Segmentation output layers are always left out.

    Raises:
        CheckpointConversionError: Listing every key that is missing from the checkpoint or has another shape,
            with both shapes.
    """
    problems: list[str] = []
    selected: dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        if key.startswith(SEGMENTATION_KEY_PREFIXES):
            continue
        if encoder_only and not key.startswith(ENCODER_PREFIX):
            continue
        if key not in weights:
            problems.append(f"{key}: missing in checkpoint, network {tuple(tensor.shape)}")
            continue
        if weights[key].shape != tensor.shape:
            problems.append(f"{key}: checkpoint {tuple(weights[key].shape)}, network {tuple(tensor.shape)}")
            continue
        selected[key] = weights[key]
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED_KEYS])
        more = f"\n  ... and {len(problems) - _MAX_LISTED_KEYS} more" if len(problems) > _MAX_LISTED_KEYS else ""
        hint = ("Use a checkpoint trained with the same plans" if encoder_only else
                "Set nnUNet_resenc_pretrained_encoder_only=1 to load only the encoder, or use a checkpoint "
                "trained with the same plans")
        raise CheckpointConversionError(f"{len(problems)} weights of the checkpoint do not fit the network:\n"
                                        f"  {listed}{more}\n{hint}.")
    if not selected:
        raise CheckpointConversionError("The checkpoint shares no weights with the network. Check that it was "
                                        "trained with a ResEnc architecture.")
    return selected


def load_pretrained(network: nn.Module, path: str | os.PathLike, encoder_only: bool = False) -> list[str]:
    """Load pretrained weights into ``network`` in place.

    Args:
        network: The plugin network, optionally wrapped by DDP or torch.compile.
        path: Checkpoint file of a plugin or stock nnU-Net ResEnc training.
        encoder_only: Load only the encoder, for a different decoder or number of classes.

    Returns:
        The loaded keys.

    Raises:
        CheckpointConversionError: If the checkpoint is missing or its keys or shapes do not fit.
    """
    module = unwrap_network(network)
    target = module.state_dict()
    weights = to_plugin_keys(read_checkpoint_weights(path))
    selected = select_weights(weights, target, encoder_only)
    merged = dict(target)
    merged.update({key: value.to(target[key].dtype) for key, value in selected.items()})
    module.load_state_dict(merged)
    logger.info("Loaded %d of %d weights from %s%s", len(selected), len(target), path,
                " (encoder only)" if encoder_only else "")
    return sorted(selected)
