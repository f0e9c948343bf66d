"""The systems the benchmark compares: how each is planned and which trainer trains it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from nnunet_resenc_plugin.demo.steps import plan_command, python_entry
from nnunet_resenc_plugin.errors import ResEncPluginError

_ENTRYPOINTS = "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"


@dataclass(frozen=True)
class System:
    """One planner and trainer combination.

    Attributes:
        name: Key used on the command line and in the results.
        description: One line for tables and help text.
        stock_planner: nnU-Net planner class name for stock systems; None for plugin systems.
        plans_name: Plans identifier that planning writes.
        trainer: Trainer class that trains the system with the benchmark schedule.
        preset: Plugin preset (plugin systems only).
        block_options: Plugin block options (plugin systems only), as accepted by ``nnunet-resenc plan``.
    """

    name: str
    description: str
    stock_planner: str | None
    plans_name: str
    trainer: str
    preset: str | None = None
    block_options: Mapping[str, object] = field(default_factory=dict)

    def plan_commands(self, dataset_id: int, configuration: str, num_processes: int) -> list[list[str]]:
        """Return the command lines that plan and preprocess ``configuration`` of a dataset for this system."""
        if self.stock_planner is None:
            return [plan_command(dataset_id, self.preset or "M", configuration, None, None,
                                 plans_name=self.plans_name, block_options=self.block_options,
                                 num_processes=num_processes)]
        return [
            python_entry(_ENTRYPOINTS, "extract_fingerprint_entry") + ["-d", str(dataset_id), "-np",
                                                                      str(num_processes)],
            python_entry(_ENTRYPOINTS, "plan_experiment_entry") + ["-d", str(dataset_id), "-pl", self.stock_planner],
            python_entry(_ENTRYPOINTS, "preprocess_entry") + ["-d", str(dataset_id), "-plans_name", self.plans_name,
                                                              "-c", configuration, "-np", str(num_processes)],
        ]


STOCK_TRAINER = "nnUNetTrainerBenchmark"
PLUGIN_TRAINER = "nnUNetTrainerResEncBenchmark"
PLUGIN_TRAINER_FP32 = "nnUNetTrainerResEncBenchmarkFP32"


def _plugin(name: str, preset: str, description: str, **options: object) -> System:
    suffix = "".join(part.capitalize() for part in name.split("_")[2:])
    return System(name, description, None, f"nnUNetPluginResEnc{preset}{suffix}BenchPlans", PLUGIN_TRAINER,
                  preset, dict(options))


SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        System("stock_default", "stock nnU-Net: nnUNetPlans + nnUNetTrainer", "ExperimentPlanner", "nnUNetPlans",
               STOCK_TRAINER),
        System("stock_resenc_m", "stock ResEnc M: nnUNetResEncUNetMPlans + nnUNetTrainer", "nnUNetPlannerResEncM",
               "nnUNetResEncUNetMPlans", STOCK_TRAINER),
        _plugin("plugin_S", "S", "plugin preset S"),
        _plugin("plugin_M", "M", "plugin preset M"),
        _plugin("plugin_L", "L", "plugin preset L"),
        _plugin("plugin_M_bottleneck", "M", "plugin preset M, bottleneck blocks", block="bottleneck"),
        _plugin("plugin_M_se", "M", "plugin preset M, squeeze-and-excitation", squeeze_excitation=True),
        _plugin("plugin_M_zero_init", "M", "plugin preset M, blocks start as their shortcut (stock init)",
                zero_init_residual=True),
        # Same plans as plugin_M; only the trainer differs, so the two share the planning step.
        System("plugin_M_fp32", "plugin preset M, float32 on the CPU (no bfloat16 autocast)", None,
               "nnUNetPluginResEncMBenchPlans", PLUGIN_TRAINER_FP32, "M"),
    )
}

DEFAULT_SYSTEMS = ("stock_default", "stock_resenc_m", "plugin_M")


def get_system(name: str) -> System:
    """Return the registered system ``name``.

    Raises:
        ResEncPluginError: If no system has that name.
    """
    if name not in SYSTEMS:
        raise ResEncPluginError(f"Unknown benchmark system {name!r}. Valid systems: {', '.join(SYSTEMS)}.")
    return SYSTEMS[name]
