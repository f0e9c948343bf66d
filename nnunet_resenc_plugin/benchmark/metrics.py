"""Benchmark metrics that nnU-Net does not compute: HD95, parameters, FLOPs and training speed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> float:
    """Return the 95th-percentile symmetric Hausdorff distance between two binary masks, in spacing units.

    Surfaces are the mask voxels that have a background neighbour along an axis (6-connectivity in 3D). The
    distance of every surface voxel of one mask to the other mask's surface comes from a Euclidean distance
    transform with the voxel spacing (``scipy.ndimage.distance_transform_edt``); the result is the 95th percentile
    of both directions' distances pooled together.

    Args:
        reference: Boolean mask, any number of dimensions.
        prediction: Boolean mask of the same shape.
        spacing: Voxel size per axis, in the same axis order as the arrays.

    Returns:
        The distance; 0.0 when both masks are empty, ``inf`` when exactly one is empty.
    """
    from scipy import ndimage

    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(f"Mask shapes differ: {reference.shape} and {prediction.shape}.")
    if len(spacing) != reference.ndim:
        raise ValueError(f"Spacing {tuple(spacing)} does not match masks with {reference.ndim} dimensions.")
    if not reference.any() and not prediction.any():
        return 0.0
    if not reference.any() or not prediction.any():
        return float("inf")

    structure = ndimage.generate_binary_structure(reference.ndim, 1)
    reference_surface = reference & ~ndimage.binary_erosion(reference, structure, border_value=0)
    prediction_surface = prediction & ~ndimage.binary_erosion(prediction, structure, border_value=0)
    to_reference = ndimage.distance_transform_edt(~reference_surface, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=spacing)
    distances = np.concatenate([to_reference[prediction_surface], to_prediction[reference_surface]])
    return float(np.percentile(distances, 95))


def hd95_per_label(reference_folder: Path, prediction_folder: Path, dataset_json: Mapping) -> dict[int, float]:
    """Return the mean HD95 per foreground label over the predictions in ``prediction_folder``.

    Cases where exactly one of reference and prediction is empty (HD95 infinite) are left out of the mean, and
    counted in a log message.

    Args:
        reference_folder: Folder with reference label files.
        prediction_folder: Folder with predicted label files of the same names.
        dataset_json: The dataset's ``dataset.json`` content.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    file_ending = dataset_json["file_ending"]
    predictions = sorted(Path(prediction_folder).glob(f"*{file_ending}"))
    if not predictions:
        raise FileNotFoundError(f"No predictions ending in {file_ending} in {prediction_folder}.")
    reader = determine_reader_writer_from_dataset_json(dict(dataset_json), str(predictions[0]))()
    labels = sorted(int(value) for value in dataset_json["labels"].values() if int(value) != 0)
    values: dict[int, list[float]] = {label: [] for label in labels}
    for prediction_file in predictions:
        reference, properties = reader.read_seg(str(Path(reference_folder) / prediction_file.name))
        prediction, _ = reader.read_seg(str(prediction_file))
        # nnU-Net readers return (1, z, y, x) and spacing in the same axis order; 2D PNGs have a dummy first axis.
        spacing = [float(s) for s in properties["spacing"]]
        reference, prediction = reference[0], prediction[0]
        if reference.shape[0] == 1:
            reference, prediction, spacing = reference[0], prediction[0], spacing[1:]
        for label in labels:
            values[label].append(hd95(reference == label, prediction == label, spacing))
    result = {}
    for label, distances in values.items():
        finite = [d for d in distances if np.isfinite(d)]
        if len(finite) < len(distances):
            logger.info("Label %d: %d of %d cases have an empty reference or prediction; HD95 skips them.",
                        label, len(distances) - len(finite), len(distances))
        result[label] = float(np.mean(finite)) if finite else float("nan")
    return result


def network_from_plans(plans: Mapping, dataset_json: Mapping, configuration: str):
    """Build the network of a plans configuration the way nnU-Net's trainer does (deep supervision off)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(dict(plans))
    config = manager.get_configuration(configuration)
    label_manager = manager.get_label_manager(dict(dataset_json))
    input_channels = determine_num_input_channels(manager, config, dict(dataset_json))
    network = get_network_from_plans(
        config.network_arch_class_name, config.network_arch_init_kwargs, config.network_arch_init_kwargs_req_import,
        input_channels, label_manager.num_segmentation_heads, allow_init=True, deep_supervision=False,
    )
    return network, input_channels, list(config.patch_size), int(config.batch_size)


def count_parameters(network) -> int:
    """Return the number of trainable parameters."""
    return int(sum(parameter.numel() for parameter in network.parameters() if parameter.requires_grad))


def flops_per_patch(network, input_channels: int, patch_size: Sequence[int]) -> float:
    """Return the floating-point operations of one forward pass on one patch (batch 1).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as two operations and
    covers convolutions and matrix products, not normalisation or activations.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network.eval()
    data = torch.zeros((1, input_channels, *patch_size))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(data)
    return float(counter.get_total_flops())


def seconds_per_iteration(training_log: Mapping[str, Sequence[float]], iterations_per_epoch: int) -> float:
    """Return the median epoch wall time divided by the training iterations per epoch.

    The first epoch is left out when there are more (it includes start-up work). An epoch also includes its
    validation iterations and checkpointing, so the value is slightly above the pure training step time.
    """
    starts = list(training_log.get("epoch_start_timestamps", []))
    ends = list(training_log.get("epoch_end_timestamps", []))
    durations = [end - start for start, end in zip(starts, ends)]
    if len(durations) > 1:
        durations = durations[1:]
    if not durations:
        return float("nan")
    return float(np.median(durations)) / iterations_per_epoch
