"""Conversion of the 2018 Data Science Bowl nuclei layout into nnU-Net's raw layout.

The source contains one folder per case, ``<id>/images/<id>.png`` (RGBA) and ``<id>/masks/*.png`` (one binary mask
per nucleus). The converter writes ``imagesTr/<id>_0000.png`` and ``labelsTr/<id>.png`` for nnU-Net's
``NaturalImage2DIO`` reader:

- The alpha channel must be constant and is dropped.
- ``channels="auto"`` writes grayscale when red, green and blue are equal in every converted case (true for all
  270 images of the stage-1 training set, fluorescence and brightfield alike), else RGB for every case. RGB goes
  into one PNG, which ``NaturalImage2DIO`` reads as three channels named R, G and B.
- The label is the union of the masks: 0 background, 1 nucleus, so overlapping masks are no problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_resenc_plugin.datasets.checks import check_dataset_id_is_unused, dataset_folder_name
from nnunet_resenc_plugin.datasets.staging import check_target_is_free, staged_folder
from nnunet_resenc_plugin.errors import DatasetConversionError

logger = logging.getLogger(__name__)

PNG_ENDING = ".png"
CHANNEL_MODES = ("auto", "gray", "rgb")
LABELS = {"background": 0, "nucleus": 1}
# Values a DSB mask may contain: 0/255 as shipped, or 0/1 as written by some tools.
MASK_VALUES = frozenset({0, 1, 255})


def convert_dsb2018(
    source: str | Path,
    raw_root: str | Path,
    dataset_id: int,
    name: str = "NucleiDSB2018",
    channels: str = "auto",
    overwrite: bool = False,
    max_cases: int | None = None,
) -> Path:
    """Convert a DSB 2018 ``stage1_train`` folder into ``raw_root/DatasetXXX_Name``.

    Args:
        source: The ``stage1_train`` folder, or a folder that contains it.
        raw_root: The nnU-Net raw folder that receives the dataset folder.
        dataset_id: nnU-Net dataset ID, 1 to 999.
        name: Dataset name.
        channels: ``"auto"``, ``"gray"`` or ``"rgb"``; see the module docstring.
        overwrite: Replace an existing dataset folder.
        max_cases: Convert only the first N cases in sorted order.

    Returns:
        The dataset folder that was written.

    Raises:
        DatasetConversionError: On a case without image or masks, an unreadable PNG, a mask of another size
            than its image or with values other than 0/1/255, a non-constant alpha channel, colour images with
            ``channels="gray"``, or an existing dataset folder without ``overwrite``.
    """
    from skimage import io

    if channels not in CHANNEL_MODES:
        raise DatasetConversionError(f"Invalid channel mode {channels!r}; choose one of {', '.join(CHANNEL_MODES)}.")
    case_dirs = _find_case_dirs(Path(source), max_cases)
    raw_root = Path(raw_root)
    folder_name = dataset_folder_name(dataset_id, name)
    target = raw_root / folder_name
    check_target_is_free(target, overwrite)
    check_dataset_id_is_unused(raw_root, folder_name)

    logger.info("Reading %d cases from %s", len(case_dirs), source)
    cases = [_read_case(case_dir) for case_dir in tqdm(case_dirs, desc="Checking DSB 2018 cases", unit="case")]
    all_gray = all(_is_gray(image) for _, image, _ in cases)
    if channels == "gray" and not all_gray:
        colour = [identifier for identifier, image, _ in cases if not _is_gray(image)]
        raise DatasetConversionError(
            f"{len(colour)} images have unequal red, green and blue channels, for example {colour[:3]}; "
            "use channels 'rgb' or 'auto' to keep their colour."
        )
    write_gray = channels == "gray" or (channels == "auto" and all_gray)

    with staged_folder(target, overwrite) as staging:
        images_dir, labels_dir = staging / "imagesTr", staging / "labelsTr"
        images_dir.mkdir()
        labels_dir.mkdir()
        for identifier, image, label in tqdm(cases, desc=f"Writing {folder_name}", unit="case"):
            pixels = image[..., 0] if write_gray else image
            io.imsave(images_dir / f"{identifier}_0000{PNG_ENDING}", pixels, check_contrast=False)
            io.imsave(labels_dir / f"{identifier}{PNG_ENDING}", label, check_contrast=False)
        _write_dataset_json(staging, write_gray, len(cases), folder_name)
    logger.info("Wrote %s (%s)", target, "grayscale" if write_gray else "RGB")
    return target


def _find_case_dirs(source: Path, max_cases: int | None) -> list[Path]:
    if (source / "stage1_train").is_dir():
        source = source / "stage1_train"
    if not source.is_dir():
        raise DatasetConversionError(f"Source folder {source} not found.")
    case_dirs = sorted(path for path in source.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not case_dirs:
        raise DatasetConversionError(
            f"No case folders found in {source}; expected <id>/images/<id>.png and <id>/masks/*.png."
        )
    if max_cases is not None:
        if max_cases < 1:
            raise DatasetConversionError(f"Invalid case count {max_cases}: convert at least 1 case.")
        case_dirs = case_dirs[:max_cases]
    return case_dirs


def _read_png(path: Path) -> np.ndarray:
    from skimage import io

    try:
        return np.asarray(io.imread(path))
    except (OSError, ValueError, SyntaxError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DatasetConversionError(f"Cannot read {path} as PNG ({reason}). Replace the file.") from error


def _read_case(case_dir: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Return the identifier, the RGB image ``(H, W, 3)`` and the union label ``(H, W)`` of one case."""
    identifier = case_dir.name
    image_path = case_dir / "images" / f"{identifier}{PNG_ENDING}"
    if not image_path.is_file():
        raise DatasetConversionError(f"Case {case_dir} has no image {image_path.relative_to(case_dir)}.")
    mask_paths = sorted((case_dir / "masks").glob(f"*{PNG_ENDING}"))
    if not mask_paths:
        raise DatasetConversionError(
            f"Image {image_path} has no label: {case_dir / 'masks'} contains no PNG mask. Add the masks or remove "
            "the case."
        )

    image = _to_rgb(_read_png(image_path), image_path)
    label = np.zeros(image.shape[:2], dtype=np.uint8)
    for mask_path in mask_paths:
        mask = _read_png(mask_path)
        if mask.ndim == 3:
            raise DatasetConversionError(f"Mask {mask_path} has {mask.shape[2]} channels; masks are single-channel.")
        if mask.shape != label.shape:
            raise DatasetConversionError(
                f"Mask {mask_path} has size {mask.shape} but its image {image_path} has size {label.shape}."
            )
        unexpected = sorted(set(np.unique(mask).tolist()) - MASK_VALUES)
        if unexpected:
            raise DatasetConversionError(
                f"Mask {mask_path} contains values {unexpected[:5]}; binary masks contain only 0 and 255 (or 0 and 1)."
            )
        label[mask > 0] = 1
    return identifier, image, label


def _to_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise DatasetConversionError(f"Image {path} has data type {pixels.dtype}; 8-bit PNG images are expected.")
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DatasetConversionError(f"Image {path} has shape {pixels.shape}; expected gray, RGB or RGBA.")
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3]
        if alpha.min() != alpha.max():
            raise DatasetConversionError(
                f"Image {path} has a non-constant alpha channel (values {int(alpha.min())} to {int(alpha.max())}); "
                "the converter drops alpha only when it carries no information."
            )
    return np.ascontiguousarray(pixels[..., :3])


def _is_gray(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _write_dataset_json(folder: Path, gray: bool, num_training: int, dataset_name: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    channel_names = {0: "gray"} if gray else {0: "R", 1: "G", 2: "B"}
    generate_dataset_json(
        str(folder),
        channel_names=channel_names,
        labels=dict(LABELS),
        num_training_cases=num_training,
        file_ending=PNG_ENDING,
        dataset_name=dataset_name,
        reference="Caicedo et al., Nature Methods 16, 1247-1253 (2019)",
        license="CC0 1.0",
        converted_by="nnunet-resenc convert dsb2018",
        overwrite_image_reader_writer="NaturalImage2DIO",
    )
