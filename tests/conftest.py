"""Shared fixtures: nnU-Net path variables in a temporary folder, real and synthetic datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_HIPPOCAMPUS = REPO_ROOT / "nnunet_resenc_plugin" / "demo_data" / "hippocampus"
# Full data set of the development checkout; a user's clone has only the embedded demo subset.
SHARED_HIPPOCAMPUS = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"


@pytest.fixture
def nnunet_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point nnUNet_raw, nnUNet_preprocessed and nnUNet_results at empty folders under ``tmp_path``."""
    paths = {}
    for name, folder in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                         ("nnUNet_results", "results")):
        path = tmp_path / folder
        path.mkdir()
        monkeypatch.setenv(name, str(path))
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def hippocampus_source() -> Path:
    """MSD hippocampus folder (imagesTr/labelsTr): the embedded demo subset, else the shared data set."""
    for folder in (DEMO_HIPPOCAMPUS, SHARED_HIPPOCAMPUS):
        if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
            return folder
    pytest.skip(f"No hippocampus data: neither {DEMO_HIPPOCAMPUS} nor {SHARED_HIPPOCAMPUS} exists.")


def _write_case(path_image: Path, path_label: Path, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    import SimpleITK as sitk

    label = np.zeros(shape, dtype=np.uint8)
    # Two boxes, one per foreground class, each about a third of every axis.
    low = [max(1, s // 6) for s in shape]
    mid = [s // 2 for s in shape]
    high = [max(m + 1, s - s // 6) for m, s in zip(mid, shape)]
    label[tuple(slice(a, b) for a, b in zip(low, mid))] = 1
    label[tuple(slice(a, b) for a, b in zip(mid, high))] = 2
    image = rng.normal(100.0, 10.0, size=shape).astype(np.float32) + 50.0 * label
    for array, path in ((image, path_image), (label, path_label)):
        itk_image = sitk.GetImageFromArray(array)
        itk_image.SetSpacing([1.0] * len(shape))
        sitk.WriteImage(itk_image, str(path))


@pytest.fixture(scope="session")
def write_synthetic_dataset() -> Callable[..., str]:
    """Return a function that writes a two-class synthetic dataset into an nnU-Net raw folder.

    The function takes ``raw_root``, ``dataset_id``, ``shape`` (voxels, z-y-x), ``num_cases`` and ``seed``,
    and returns the dataset folder name.
    """

    def write(raw_root: Path, dataset_id: int, shape: tuple[int, ...], num_cases: int = 5, seed: int = 0) -> str:
        name = f"Dataset{dataset_id:03d}_Synthetic"
        folder = Path(raw_root) / name
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "labelsTr").mkdir()
        rng = np.random.default_rng(seed)
        for index in range(num_cases):
            case = f"case_{index:03d}"
            _write_case(folder / "imagesTr" / f"{case}_0000.nii.gz", folder / "labelsTr" / f"{case}.nii.gz",
                        shape, rng)
        dataset_json = {
            "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "first": 1, "second": 2},
            "numTraining": num_cases,
            "file_ending": ".nii.gz",
        }
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        return name

    return write
