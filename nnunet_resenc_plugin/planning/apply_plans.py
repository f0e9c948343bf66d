"""Apply a plans file (planned on one dataset, or shipped in ``plans/``) to another dataset.

The architecture, patch size, batch size, spacing and axis order are kept, so the same network trains on every
dataset. What depends on the target dataset is taken from it: name, image reader, intensity statistics and the
normalisation scheme per channel. Preprocessed data gets its own folder, because the spacing may differ from the
target's default plan.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from typing import Any, Mapping

from nnunet_resenc_plugin.errors import PlansValidationError

logger = logging.getLogger(__name__)


def _source_dataset_json(plans_file: str, plans: Mapping[str, Any]) -> dict | None:
    """Return the channels and labels the plans were made for, if they are known."""
    recorded = plans.get("resenc_plugin", {}).get("dataset")
    if isinstance(recorded, Mapping):
        return dict(recorded)
    sibling = os.path.join(os.path.dirname(os.path.abspath(plans_file)), "dataset.json")
    if os.path.isfile(sibling):
        with open(sibling, encoding="utf-8") as handle:
            return json.load(handle)
    return None


def check_compatible(source: Mapping[str, Any] | None, target: Mapping[str, Any]) -> list[str]:
    """List the differences in channels and labels between the source and target ``dataset.json``.

    Returns an empty list when they agree or when the source is unknown.
    """
    if source is None:
        return []
    problems = []
    source_channels = list(source.get("channel_names", source.get("modality", {})).values())
    target_channels = list(target.get("channel_names", target.get("modality", {})).values())
    if source_channels and len(source_channels) != len(target_channels):
        problems.append(f"the plans were made for {len(source_channels)} channel(s) {source_channels}, the target "
                        f"has {len(target_channels)} {target_channels}")
    source_labels = source.get("labels")
    if source_labels is not None and dict(source_labels) != dict(target.get("labels", {})):
        problems.append(f"the plans were made for labels {dict(source_labels)}, the target has "
                        f"{dict(target.get('labels', {}))}")
    return problems


def apply_plans(plans_file: str, dataset_id: int, plans_name: str | None = None,
                allow_mismatch: bool = False, num_processes: int = 2) -> str:
    """Write a copy of ``plans_file`` adapted to dataset ``dataset_id`` and return its plans identifier.

    Args:
        plans_file: Source plans JSON.
        dataset_id: Target nnU-Net dataset id; its fingerprint is extracted when missing.
        plans_name: Identifier of the new plans; None keeps the source's ``plans_name``.
        allow_mismatch: Accept a target with other channels or labels than the source. Training from scratch
            works then, but a checkpoint of the source cannot be loaded.
        num_processes: Worker processes for fingerprint extraction.

    Raises:
        PlansValidationError: If the source plans are invalid, or channels or labels differ without
            ``allow_mismatch``.
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_resenc_plugin.planning.api import ensure_fingerprint
    from nnunet_resenc_plugin.planning.validation import validate_plans

    try:
        with open(plans_file, encoding="utf-8") as handle:
            source = json.load(handle)
    except FileNotFoundError as error:
        raise PlansValidationError(f"Plans file {plans_file!r} not found.") from error
    validate_plans(source)

    dataset_name = maybe_convert_to_dataset_name(dataset_id)
    with open(os.path.join(os.fspath(nnUNet_raw), dataset_name, "dataset.json"), encoding="utf-8") as handle:
        target_json = json.load(handle)
    problems = check_compatible(_source_dataset_json(plans_file, source), target_json)
    if problems and not allow_mismatch:
        raise PlansValidationError(f"Plans {plans_file!r} do not match {dataset_name}: " + "; ".join(problems)
                                   + ". Pass --allow-mismatch to train this architecture from scratch anyway.")
    for problem in problems:
        logger.warning("%s: %s; training from scratch only.", dataset_name, problem)

    ensure_fingerprint(dataset_id, num_processes)
    planner = ExperimentPlanner(dataset_id, plans_name=plans_name or source["plans_name"])
    normalization, use_mask = planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()

    plans = copy.deepcopy(source)
    identifier = plans_name or source["plans_name"]
    plans["dataset_name"] = dataset_name
    plans["plans_name"] = identifier
    plans["image_reader_writer"] = planner.determine_reader_writer().__name__
    plans["foreground_intensity_properties_per_channel"] = \
        planner.dataset_fingerprint["foreground_intensity_properties_per_channel"]
    plans.setdefault("resenc_plugin", {})["dataset"] = {"channel_names": target_json.get("channel_names"),
                                                        "labels": target_json.get("labels")}
    plans["resenc_plugin"]["applied_from"] = source.get("dataset_name")
    for name, configuration in plans["configurations"].items():
        if "inherits_from" in configuration and "data_identifier" not in configuration:
            continue
        configuration["data_identifier"] = f"{identifier}_{name}"
        if "normalization_schemes" in configuration or "inherits_from" not in configuration:
            configuration["normalization_schemes"] = normalization
            configuration["use_mask_for_norm"] = use_mask

    folder = os.path.join(os.fspath(nnUNet_preprocessed), dataset_name)
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(os.fspath(nnUNet_raw), dataset_name, "dataset.json"),
                os.path.join(folder, "dataset.json"))
    target_file = os.path.join(folder, identifier + ".json")
    with open(target_file, "w", encoding="utf-8") as handle:
        json.dump(plans, handle, indent=2)
    logger.info("Wrote %s (architecture, patch and batch from %s).", target_file, plans_file)
    return identifier
