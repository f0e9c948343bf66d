"""Residual-encoder U-Net plugin for nnU-Net v2.

The package registers a residual-encoder U-Net, an experiment planner and trainers with nnU-Net v2, so that
nnU-Net's own planning, preprocessing, training and inference commands use them. Importing this package is
cheap: submodules that pull in torch or nnunetv2 are imported only when used.
"""

__version__ = "0.1.0"
