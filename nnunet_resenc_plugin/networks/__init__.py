"""Residual-encoder U-Net for nnU-Net v2 and conversion of stock ResEnc checkpoints."""

from nnunet_resenc_plugin.networks.resenc_unet import ResEncUNet

__all__ = ["ResEncUNet"]
