"""Checks shared by the dataset converters: dataset folder names, label values and image geometry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from nnunet_resenc_plugin.errors import DatasetConversionError

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# Largest voxel-size and origin difference (in the image's physical units, usually mm) that still counts as the
# same grid. NIfTI headers store float32, so exact equality is too strict.
GEOMETRY_TOLERANCE = 1e-3


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """Return nnU-Net's folder name ``DatasetXXX_Name`` for an ID and a name.

    Args:
        dataset_id: Dataset ID, 1 to 999 as in nnU-Net.
        name: Dataset name: letters, digits, ``_`` and ``-``, starting with a letter or digit.

    Raises:
        DatasetConversionError: If the ID or the name is invalid.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise DatasetConversionError(
            f"Invalid dataset ID {dataset_id!r}: nnU-Net dataset IDs are integers from 1 to 999."
        )
    if not _NAME_PATTERN.match(name):
        raise DatasetConversionError(
            f"Invalid dataset name {name!r}: use letters, digits, '_' and '-' only, starting with a letter or digit."
        )
    return f"Dataset{dataset_id:03d}_{name}"


def check_dataset_id_is_unused(raw_root: Path, folder_name: str) -> None:
    """Raise if ``raw_root`` contains another dataset folder with the same ID but a different name.

    nnU-Net finds a dataset by its ID, so two folders ``Dataset004_A`` and ``Dataset004_B`` make the ID ambiguous.

    Args:
        raw_root: The nnU-Net raw folder.
        folder_name: The ``DatasetXXX_Name`` folder about to be written.
    """
    if not raw_root.is_dir():
        return
    prefix = folder_name[: len("Dataset000")]
    others = sorted(
        path.name for path in raw_root.iterdir() if path.name.startswith(prefix) and path.name != folder_name
    )
    if others:
        raise DatasetConversionError(
            f"Dataset ID {prefix[len('Dataset'):]} is already used by {', '.join(others)} in {raw_root}. "
            "Choose another dataset ID, or remove that folder."
        )


def integer_label_array(array: np.ndarray, source: Path) -> np.ndarray:
    """Return a label array as integers, converting floating-point labels that hold whole numbers.

    Args:
        array: Label voxels as read from the file.
        source: Label file, named in error messages.

    Raises:
        DatasetConversionError: If the array contains non-finite or fractional values, or negative values.
    """
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise DatasetConversionError(f"Label file {source} contains NaN or infinite values; fix the file.")
        if not np.all(array == np.round(array)):
            fractional = np.unique(array[array != np.round(array)])[:5].tolist()
            raise DatasetConversionError(
                f"Label file {source} contains non-integer values such as {fractional}; labels must be whole "
                "numbers. Fix the file, or check that it is a label map and not an image."
            )
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise DatasetConversionError(f"Label file {source} has unsupported data type {array.dtype}.")
    if array.size and array.min() < 0:
        raise DatasetConversionError(f"Label file {source} contains negative values; labels must be 0 or larger.")
    max_value = int(array.max()) if array.size else 0
    dtype = np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16
    return array.astype(dtype)


def check_label_values(values: Iterable[int], allowed: Iterable[int], source: Path) -> None:
    """Raise if a label file contains a value outside the declared label set.

    Args:
        values: Distinct values found in the file.
        allowed: Declared label values.
        source: Label file, named in the message.
    """
    allowed_set = {int(value) for value in allowed}
    unexpected = sorted({int(value) for value in values} - allowed_set)
    if unexpected:
        raise DatasetConversionError(
            f"Label file {source} contains values {unexpected} outside the declared labels {sorted(allowed_set)}. "
            "Fix the label file, or declare the missing labels (dataset.json 'labels' or --labels)."
        )


def check_same_geometry(
    image_geometry: Mapping[str, Sequence[float]],
    label_geometry: Mapping[str, Sequence[float]],
    image_path: Path,
    label_path: Path,
) -> None:
    """Raise if an image and its label do not lie on the same voxel grid.

    Args:
        image_geometry: ``size``, ``spacing``, ``origin`` and ``direction`` of the image.
        label_geometry: The same keys for the label.
        image_path: Image file, named in the message.
        label_path: Label file, named in the message.
    """
    if tuple(image_geometry["size"]) != tuple(label_geometry["size"]):
        raise DatasetConversionError(
            f"Image {image_path} has size {tuple(image_geometry['size'])} but its label {label_path} has size "
            f"{tuple(label_geometry['size'])}. Resample the label onto the image grid before converting."
        )
    for key in ("spacing", "origin", "direction"):
        if key not in image_geometry or key not in label_geometry:
            continue
        image_value = np.asarray(image_geometry[key], dtype=float)
        label_value = np.asarray(label_geometry[key], dtype=float)
        if image_value.shape != label_value.shape or not np.allclose(
            image_value, label_value, rtol=0.0, atol=GEOMETRY_TOLERANCE
        ):
            raise DatasetConversionError(
                f"Image {image_path} and its label {label_path} differ in {key}: {tuple(image_value.round(6))} "
                f"versus {tuple(label_value.round(6))}. Fix the label header or resample the label onto the image."
            )
