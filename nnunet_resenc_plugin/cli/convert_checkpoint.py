"""``nnunet-resenc convert-checkpoint``: rewrite an nnU-Net checkpoint's weights between stock and plugin keys.

A stock nnU-Net ResEnc checkpoint (dynamic-network-architectures' ``ResidualEncoderUNet``) converted to plugin
keys can be passed to ``nnUNetv2_train -pretrained_weights`` with a plugin trainer. The plugin trainers also
convert stock checkpoints themselves when given through ``nnUNet_resenc_pretrained_weights``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``nnunet-resenc convert-checkpoint`` to ``parser``."""
    parser.add_argument("input", type=Path, help="Checkpoint to convert (.pth written by nnU-Net).")
    parser.add_argument("output", type=Path, help="Path of the converted checkpoint; must not exist.")
    parser.add_argument("--to", choices=("plugin", "stock"), default="plugin",
                        help="Key names to write: plugin ResEncUNet (default) or stock ResidualEncoderUNet.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output file.")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.input`` and write ``args.output``; returns 0."""
    import torch

    from nnunet_resenc_plugin.errors import CheckpointConversionError
    from nnunet_resenc_plugin.networks.conversion import plugin_to_stock_state_dict, stock_to_plugin_state_dict
    from nnunet_resenc_plugin.training.pretrained import is_stock_state_dict, read_checkpoint_weights

    if args.output.exists() and not args.overwrite:
        raise CheckpointConversionError(f"Output {str(args.output)!r} exists. Choose another path or pass "
                                        f"--overwrite.")
    weights = read_checkpoint_weights(args.input)
    stock = is_stock_state_dict(weights)
    if args.to == "plugin":
        if not stock:
            raise CheckpointConversionError(f"{str(args.input)!r} already uses plugin keys; nothing to convert.")
        converted = stock_to_plugin_state_dict(weights)
    else:
        if stock:
            raise CheckpointConversionError(f"{str(args.input)!r} already uses stock keys; nothing to convert.")
        converted = plugin_to_stock_state_dict(weights)

    # Keep every other entry of an nnU-Net checkpoint (trainer name, init arguments, epoch) unchanged.
    checkpoint = torch.load(args.input, map_location="cpu", weights_only=False)
    if isinstance(checkpoint, dict) and "network_weights" in checkpoint:
        checkpoint = dict(checkpoint)
        checkpoint["network_weights"] = converted
    else:
        checkpoint = converted
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.output)
    logger.info("Wrote %d weights with %s keys to %s", len(converted), args.to, args.output)
    return 0
