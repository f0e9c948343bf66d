"""Experiment planning for the residual-encoder U-Net.

- ``api``: ``plan_experiment``, the entry point of ``nnunet-resenc plan``, the demo and the benchmark.
- ``planner``: ``ResEncPluginPlanner``, an nnU-Net ``ExperimentPlanner`` subclass.
- ``presets``: the S, M, L and XL table and the block options.
- ``topology``: stage layout, patch padding and shrinking.
- ``memory`` and ``measure``: the measured memory model and real training steps.
- ``compute_aware``: planning for a time budget per iteration.
- ``validation`` and ``apply_plans``: checking plans and moving them to another dataset.

Submodules import torch and nnunetv2, so this package imports none of them itself.
"""
