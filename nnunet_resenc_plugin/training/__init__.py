"""Trainers, training precision, pretrained loading and trainer discovery for nnU-Net.

The trainer classes live in :mod:`nnunet_resenc_plugin.training.trainers`. This package imports nothing at
import time, so that the interpreter-start hook and the command line stay fast.
"""
