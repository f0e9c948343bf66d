"""Python entry point for planning (and optionally preprocessing) a dataset with the plugin planner.

The demo, the benchmark and the ``nnunet-resenc plan`` command call ``plan_experiment``. Its signature is kept
stable for them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from nnunet_resenc_plugin.errors import PlanningError

logger = logging.getLogger(__name__)

CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


def _require_paths() -> None:
    missing = [name for name in ("nnUNet_raw", "nnUNet_preprocessed") if not os.environ.get(name)]
    if missing:
        raise PlanningError(f"Environment variable(s) {', '.join(missing)} not set. Set them to nnU-Net's raw and "
                            "preprocessed data folders before planning.")


def ensure_fingerprint(dataset_id: int, num_processes: int = 2) -> None:
    """Extract the dataset fingerprint with nnU-Net when ``dataset_fingerprint.json`` is missing.

    Args:
        dataset_id: nnU-Net dataset id.
        num_processes: Worker processes for the extraction.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(dataset_id)
    fingerprint = os.path.join(os.fspath(nnUNet_preprocessed), name, "dataset_fingerprint.json")
    if os.path.isfile(fingerprint):
        return
    logger.info("No fingerprint for %s yet; extracting it with %d process(es).", name, num_processes)
    extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=False,
                                clean=False, verbose=False)


def _preprocessed_is_complete(dataset_name: str, data_identifier: str, case_count: int) -> bool:
    from nnunetv2.paths import nnUNet_preprocessed

    folder = os.path.join(os.fspath(nnUNet_preprocessed), dataset_name, data_identifier)
    if not os.path.isdir(folder):
        return False
    return sum(name.endswith(".pkl") for name in os.listdir(folder)) >= case_count


def preprocess_configurations(dataset_id: int, plans_name: str, configurations: Sequence[str],
                              num_processes: int = 2) -> list[str]:
    """Preprocess configurations with nnU-Net, skipping those whose data folder is already complete.

    2d and 3d_fullres plans of the plugin point at nnU-Net's default data folders, so data preprocessed for the
    default planner is reused and not written twice.

    Args:
        dataset_id: nnU-Net dataset id.
        plans_name: Plans identifier.
        configurations: Configurations to preprocess; those missing from the plans are skipped.
        num_processes: Worker processes per configuration.

    Returns:
        The configurations that were preprocessed now.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    name = maybe_convert_to_dataset_name(dataset_id)
    plans_manager = PlansManager(os.path.join(os.fspath(nnUNet_preprocessed), name, plans_name + ".json"))
    from batchgenerators.utilities.file_and_folder_operations import load_json

    case_count = int(load_json(os.path.join(os.fspath(nnUNet_preprocessed), name, "dataset.json"))["numTraining"])
    todo = []
    for configuration in configurations:
        if configuration not in plans_manager.available_configurations:
            logger.info("Configuration %s is not in %s; nothing to preprocess.", configuration, plans_name)
            continue
        identifier = plans_manager.get_configuration(configuration).data_identifier
        if _preprocessed_is_complete(name, identifier, case_count):
            logger.info("Reusing preprocessed data %s/%s for %s.", name, identifier, configuration)
            continue
        todo.append(configuration)
    if todo:
        preprocess_dataset(dataset_id, plans_name, todo, [num_processes] * len(todo), verbose=False)
    return todo


def plan_experiment(
    dataset_id: int,
    preset: str = "M",
    gpu_memory_gb: float | None = None,
    device: str | None = None,
    seconds_per_iteration: float | None = None,
    configurations: Sequence[str] | None = None,
    plans_name: str | None = None,
    preprocess: bool = False,
    num_processes: int = 2,
    **block_options: Any,
) -> str:
    """Plan a dataset for ``ResEncUNet`` and return the plans identifier.

    Extracts the dataset fingerprint first when it is missing, writes
    ``$nnUNet_preprocessed/<dataset>/<plans_name>.json`` and, with ``preprocess=True``, runs nnU-Net's
    preprocessing for the requested configurations.

    NOTE: the compute-aware mode (``device`` or ``seconds_per_iteration``) times real training steps, so it takes
    seconds to minutes per configuration on a CPU; ``configurations`` limits the timing to those configurations.

    Args:
        dataset_id: nnU-Net dataset id (the raw data must be in ``$nnUNet_raw``).
        preset: ``S``, ``M``, ``L`` or ``XL``.
        gpu_memory_gb: Peak training memory to plan for, in GB; None uses the preset's target.
        device: ``cpu`` or ``cuda`` to plan for the time budget on that device; None plans by memory alone.
        seconds_per_iteration: Time budget per training iteration for the compute-aware mode.
        configurations: Configurations to time and preprocess (``2d``, ``3d_fullres``, ``3d_lowres``); None means
            all that nnU-Net plans. The plans always contain every configuration.
        plans_name: Plans identifier; None uses ``nnUNetPluginResEnc{preset}Plans``.
        preprocess: Whether to preprocess after planning.
        num_processes: Worker processes for fingerprint extraction and preprocessing.
        **block_options: ``norm``, ``block``, ``downsampling``, ``shortcut``, ``squeeze_excitation``,
            ``stochastic_depth``, ``zero_init_residual``.

    Raises:
        PlanningError: On unknown presets, options or configurations, or missing nnU-Net path variables.
    """
    _require_paths()
    if configurations is not None:
        unknown = [c for c in configurations if c not in CONFIGURATIONS]
        if unknown:
            raise PlanningError(f"Unknown configuration(s) {', '.join(unknown)}. Valid configurations: "
                                f"{', '.join(CONFIGURATIONS)}.")
    if num_processes < 1:
        raise PlanningError(f"num_processes must be at least 1, got {num_processes}.")

    from nnunet_resenc_plugin.planning.planner import ResEncPluginPlanner

    ensure_fingerprint(dataset_id, num_processes)
    planner = ResEncPluginPlanner(
        dataset_id,
        gpu_memory_target_in_gb=gpu_memory_gb,
        plans_name=plans_name,
        preset=preset,
        block_options=block_options,
        device=device,
        seconds_per_iteration=seconds_per_iteration,
        timed_configurations=configurations,
    )
    plans = planner.plan_experiment()
    from nnunet_resenc_plugin.planning.validation import validate_plans

    validate_plans(plans)
    if preprocess:
        preprocess_configurations(dataset_id, planner.plans_identifier,
                                  list(configurations or CONFIGURATIONS), num_processes)
    return planner.plans_identifier
