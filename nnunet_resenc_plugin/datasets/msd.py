"""Conversion of Medical Segmentation Decathlon (MSD) style NIfTI folders into nnU-Net's raw layout.

The source folder contains ``imagesTr/CASE.nii.gz`` and ``labelsTr/CASE.nii.gz`` with equal names, optionally
``imagesTs/`` and an MSD ``dataset.json`` (``labels`` as ``{"0": "background", ...}`` and ``modality``). Images
that hold one channel are copied byte for byte to ``CASE_0000.nii.gz``; 4D images are split into one file per
channel. Label files are copied unchanged when they hold integers and rewritten as integers when they are stored
as floating point.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_resenc_plugin.datasets.checks import (
    check_dataset_id_is_unused,
    check_label_values,
    check_same_geometry,
    dataset_folder_name,
    integer_label_array,
)
from nnunet_resenc_plugin.datasets.staging import check_target_is_free, staged_folder
from nnunet_resenc_plugin.errors import DatasetConversionError

logger = logging.getLogger(__name__)

NIFTI_ENDING = ".nii.gz"


@dataclass(frozen=True)
class MsdCase:
    """One labelled or unlabelled case of an MSD folder."""

    identifier: str
    image: Path
    label: Path | None


def convert_msd(
    source: str | Path,
    raw_root: str | Path,
    dataset_id: int,
    name: str | None = None,
    labels: Mapping[str, int] | Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    overwrite: bool = False,
    max_cases: int | None = None,
    test_cases: Collection[str] = (),
) -> Path:
    """Convert an MSD-style folder into ``raw_root/DatasetXXX_Name``.

    Args:
        source: Folder with ``imagesTr/`` and ``labelsTr/`` (and optionally ``imagesTs/`` and ``dataset.json``).
        raw_root: The nnU-Net raw folder that receives the dataset folder.
        dataset_id: nnU-Net dataset ID, 1 to 999.
        name: Dataset name; defaults to the source folder name without an MSD ``TaskXX_`` prefix.
        labels: Declared labels as ``{name: value}`` or as names in value order starting at background 0.
            Defaults to the ``labels`` of the source ``dataset.json``.
        channel_names: One name per image channel; ``"CT"`` selects nnU-Net's CT normalisation, any other name
            z-score normalisation. Defaults to the source ``dataset.json`` ``modality``, else ``"image"`` for a
            single channel and ``"channel0"``, ``"channel1"``, ... for 4D images.
        overwrite: Replace an existing dataset folder.
        max_cases: Convert only the first N labelled cases in sorted order.
        test_cases: Identifiers of labelled cases to write to ``imagesTs``/``labelsTs`` instead of the training
            folders, for example cases held out for evaluation.

    Returns:
        The dataset folder that was written.

    Raises:
        DatasetConversionError: On missing or unreadable files, labels outside the declared set, image and
            label grids that differ, or an existing dataset folder without ``overwrite``.
    """
    source = Path(source)
    raw_root = Path(raw_root)
    metadata = _read_source_metadata(source)
    label_map = _resolve_labels(labels, metadata, source)
    cases = _find_cases(source, max_cases)
    unknown_test_cases = sorted(set(test_cases) - {case.identifier for case in cases})
    if unknown_test_cases:
        raise DatasetConversionError(
            f"Held-out cases {unknown_test_cases} are not among the converted cases of {source}."
        )

    folder_name = dataset_folder_name(dataset_id, name or _default_name(source))
    target = raw_root / folder_name
    check_target_is_free(target, overwrite)
    check_dataset_id_is_unused(raw_root, folder_name)
    unlabelled = _find_unlabelled_cases(source)

    logger.info("Converting %d labelled cases from %s into %s", len(cases), source, target)
    num_channels = None
    with staged_folder(target, overwrite) as staging:
        for case in tqdm(cases, desc=f"Converting {folder_name}", unit="case"):
            split = "Ts" if case.identifier in test_cases else "Tr"
            channels = _convert_case(case, staging / f"images{split}", staging / f"labels{split}", label_map)
            if num_channels is not None and channels != num_channels:
                raise DatasetConversionError(
                    f"Image {case.image} has {channels} channels but earlier cases have {num_channels}; "
                    "every case needs the same channels."
                )
            num_channels = channels
        for case in unlabelled:
            _convert_case(case, staging / "imagesTs", None, label_map)

        names = _resolve_channel_names(channel_names, metadata, num_channels or 1)
        _write_dataset_json(
            staging,
            names,
            label_map,
            num_training=len(cases) - len(set(test_cases)),
            dataset_name=folder_name,
            metadata=metadata,
        )
    logger.info("Wrote %s", target)
    return target


def _read_source_metadata(source: Path) -> dict:
    if not source.is_dir():
        raise DatasetConversionError(f"Source folder {source} not found.")
    metadata_file = source / "dataset.json"
    if not metadata_file.is_file():
        return {}
    try:
        return json.loads(metadata_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetConversionError(f"Cannot read {metadata_file}: {error}. Fix or remove the file.") from error


def _resolve_labels(
    labels: Mapping[str, int] | Sequence[str] | None, metadata: dict, source: Path
) -> dict[str, int]:
    if labels is None and "labels" in metadata:
        # MSD writes {"0": "background", "1": "Anterior"}; nnU-Net v2 wants {"background": 0, "Anterior": 1}.
        try:
            labels = {str(label_name): int(value) for value, label_name in metadata["labels"].items()}
        except (AttributeError, TypeError, ValueError) as error:
            raise DatasetConversionError(
                f"The 'labels' entry of {source / 'dataset.json'} is not a mapping of values to names: "
                f"{metadata['labels']!r}."
            ) from error
    if labels is None:
        raise DatasetConversionError(
            f"No labels declared for {source}: it has no dataset.json with 'labels'. Declare them in value order "
            "starting with background, for example --labels background Anterior Posterior."
        )
    if isinstance(labels, Mapping):
        label_map = {str(label_name): int(value) for label_name, value in labels.items()}
    else:
        label_map = {str(label_name): value for value, label_name in enumerate(labels)}

    values = sorted(label_map.values())
    if values != list(range(len(values))) or len(values) < 2:
        raise DatasetConversionError(
            f"Declared labels {label_map} are invalid: nnU-Net needs background 0 and consecutive values "
            "0, 1, 2, ... with at least one foreground label."
        )
    return dict(sorted(label_map.items(), key=lambda item: item[1]))


def _resolve_channel_names(channel_names: Sequence[str] | None, metadata: dict, num_channels: int) -> list[str]:
    if channel_names is None and "modality" in metadata:
        modality = metadata["modality"]
        channel_names = [modality[key] for key in sorted(modality, key=int)]
    if channel_names is None:
        channel_names = ["image"] * num_channels if num_channels == 1 else [f"channel{i}" for i in range(num_channels)]
    if len(channel_names) != num_channels:
        raise DatasetConversionError(
            f"{len(channel_names)} channel names {list(channel_names)} given for images with {num_channels} "
            "channels; give one name per channel."
        )
    return list(channel_names)


def _default_name(source: Path) -> str:
    name = source.resolve().name
    if name.startswith("Task") and "_" in name:
        name = name.split("_", 1)[1]
    return name


def _case_identifier(path: Path) -> str:
    return path.name[: -len(NIFTI_ENDING)]


def _nifti_files(folder: Path) -> list[Path]:
    # Archives made on macOS contain "._CASE.nii.gz" resource forks next to the real files.
    return sorted(path for path in folder.glob(f"*{NIFTI_ENDING}") if not path.name.startswith("._"))


def _find_cases(source: Path, max_cases: int | None) -> list[MsdCase]:
    images_dir, labels_dir = source / "imagesTr", source / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetConversionError(
                f"Folder {folder} not found: an MSD-style source needs imagesTr/ and labelsTr/ with "
                f"{NIFTI_ENDING} files of equal names."
            )
    images = _nifti_files(images_dir)
    if not images:
        raise DatasetConversionError(f"No {NIFTI_ENDING} images found in {images_dir}.")
    if max_cases is not None:
        if max_cases < 1:
            raise DatasetConversionError(f"Invalid case count {max_cases}: convert at least 1 case.")
        images = images[:max_cases]

    label_names = {path.name for path in _nifti_files(labels_dir)}
    without_label = [path.name for path in images if path.name not in label_names]
    if without_label:
        raise DatasetConversionError(
            f"{len(without_label)} images in {images_dir} have no label in {labels_dir}, for example "
            f"{without_label[:3]}. Add the labels or move those images to imagesTs/."
        )
    if max_cases is None:
        image_names = {path.name for path in images}
        without_image = sorted(label_names - image_names)
        if without_image:
            raise DatasetConversionError(
                f"{len(without_image)} labels in {labels_dir} have no image in {images_dir}, for example "
                f"{without_image[:3]}. Add the images or remove those labels."
            )
    return [MsdCase(_case_identifier(path), path, labels_dir / path.name) for path in images]


def _find_unlabelled_cases(source: Path) -> list[MsdCase]:
    folder = source / "imagesTs"
    if not folder.is_dir():
        return []
    return [MsdCase(_case_identifier(path), path, None) for path in _nifti_files(folder)]


def _read_image(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetConversionError(
            f"Cannot read {path} as NIfTI ({first_line}). Replace the file with a readable copy."
        ) from error


def _geometry(image: sitk.Image) -> dict[str, tuple]:
    """Return the spatial geometry of an image, dropping the channel axis of a 4D image."""
    dimension = min(image.GetDimension(), 3)
    direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), image.GetDimension())
    return {
        "size": tuple(image.GetSize()[:dimension]),
        "spacing": tuple(image.GetSpacing()[:dimension]),
        "origin": tuple(image.GetOrigin()[:dimension]),
        "direction": tuple(direction[:dimension, :dimension].ravel()),
    }


def _convert_case(
    case: MsdCase, images_out: Path, labels_out: Path | None, label_map: Mapping[str, int]
) -> int:
    """Write one case and return its number of channels."""
    image = _read_image(case.image)
    if image.GetDimension() not in (3, 4):
        raise DatasetConversionError(
            f"Image {case.image} has {image.GetDimension()} dimensions; MSD images are 3D, or 4D with channels "
            "along the last axis."
        )
    images_out.mkdir(parents=True, exist_ok=True)

    if case.label is not None and labels_out is not None:
        label = _read_image(case.label)
        check_same_geometry(_geometry(image), _geometry(label), case.image, case.label)
        labels_out.mkdir(parents=True, exist_ok=True)
        _write_label(label, case.label, labels_out / case.label.name, label_map)

    if image.GetDimension() == 3:
        shutil.copyfile(case.image, images_out / f"{case.identifier}_0000{NIFTI_ENDING}")
        return 1
    num_channels = image.GetSize()[3]
    for channel in range(num_channels):
        sitk.WriteImage(image[:, :, :, channel], str(images_out / f"{case.identifier}_{channel:04d}{NIFTI_ENDING}"))
    return num_channels


def _write_label(label: sitk.Image, source: Path, destination: Path, label_map: Mapping[str, int]) -> None:
    array = sitk.GetArrayViewFromImage(label)
    integers = integer_label_array(array, source)
    check_label_values(np.unique(integers), label_map.values(), source)
    if np.issubdtype(array.dtype, np.integer):
        shutil.copyfile(source, destination)
        return

    converted = sitk.GetImageFromArray(integers)
    converted.CopyInformation(label)
    sitk.WriteImage(converted, str(destination), useCompression=True)
    logger.debug("Converted floating-point label %s to %s", source, integers.dtype)


def _write_dataset_json(
    folder: Path,
    channel_names: Sequence[str],
    label_map: Mapping[str, int],
    num_training: int,
    dataset_name: str,
    metadata: dict,
) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(folder),
        channel_names=dict(enumerate(channel_names)),
        labels=dict(label_map),
        num_training_cases=num_training,
        file_ending=NIFTI_ENDING,
        dataset_name=dataset_name,
        reference=metadata.get("reference"),
        release=metadata.get("release"),
        description=metadata.get("description"),
        license=metadata.get("licence", metadata.get("license", "see the source dataset")),
        converted_by="nnunet-resenc convert msd",
    )
