"""Dataset conversion: embedded demo data, real MSD and DSB 2018 cases, and every bad-input case."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from skimage import io

from nnunet_resenc_plugin.cli import main as cli_main
from nnunet_resenc_plugin.datasets import convert_dsb2018, convert_msd
from nnunet_resenc_plugin.errors import DatasetConversionError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "nnunet_resenc_plugin" / "demo_data"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
HIPPOCAMPUS_LABELS = ["background", "Anterior", "Posterior"]


# ----------------------------------------------------------------------------------------------------------------
# Helpers that build small sources in a temporary folder.


def _write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _make_msd_source(root: Path, num_cases: int = 3, shape=(4, 5, 6)) -> Path:
    rng = np.random.default_rng(0)
    for index in range(num_cases):
        name = f"case_{index:03d}.nii.gz"
        label = np.zeros(shape, dtype=np.uint8)
        label[1:3, 1:3, 1:3] = 1
        label[2:, 3:, 3:] = 2
        _write_nifti(root / "imagesTr" / name, rng.normal(size=shape).astype(np.float32))
        _write_nifti(root / "labelsTr" / name, label)
    return root


def _make_dsb_source(root: Path, num_cases: int = 2, size: int = 16) -> Path:
    for index in range(num_cases):
        identifier = f"{index:04x}abcd"
        case = root / "stage1_train" / identifier
        (case / "images").mkdir(parents=True)
        (case / "masks").mkdir()
        gray = np.full((size, size), 20 + index, dtype=np.uint8)
        rgba = np.stack([gray, gray, gray, np.full_like(gray, 255)], axis=-1)
        io.imsave(case / "images" / f"{identifier}.png", rgba, check_contrast=False)
        for nucleus, (row, col) in enumerate(((2, 2), (8, 8))):
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[row : row + 4, col : col + 4] = 255
            io.imsave(case / "masks" / f"nucleus{nucleus}.png", mask, check_contrast=False)
    return root


def _convert_small_msd(source: Path, raw: Path, **kwargs) -> Path:
    return convert_msd(source, raw, 11, name="Small", labels=HIPPOCAMPUS_LABELS, **kwargs)


def _assert_nothing_written(raw: Path) -> None:
    leftovers = sorted(path.name for path in raw.iterdir()) if raw.exists() else []
    assert leftovers == []


# ----------------------------------------------------------------------------------------------------------------
# Embedded demo data (always present in a clone).


def test_demo_data_matches_manifest():
    folder = DEMO_DATA / "hippocampus"
    lines = (folder / "MANIFEST.sha256").read_text().splitlines()
    assert len(lines) == 84
    for line in lines:
        digest, relative = line.split(maxsplit=1)
        assert hashlib.sha256((folder / relative).read_bytes()).hexdigest() == digest, relative


def test_demo_data_has_license():
    text = (DEMO_DATA / "LICENSE.md").read_text()
    assert "CC BY-SA 4.0" in text
    assert "arXiv:1902.09063" in text
    assert "unmodified" in text


def test_convert_demo_data(tmp_path):
    source = DEMO_DATA / "hippocampus"
    target = convert_msd(source, tmp_path, 4, name="DemoHippocampus", labels=HIPPOCAMPUS_LABELS, max_cases=4,
                         test_cases=["hippocampus_020"])

    assert target == tmp_path / "Dataset004_DemoHippocampus"
    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dataset["numTraining"] == 3
    assert dataset["file_ending"] == ".nii.gz"
    assert dataset["channel_names"] == {"0": "image"}
    assert sorted(p.name for p in (target / "imagesTs").iterdir()) == ["hippocampus_020_0000.nii.gz"]
    assert sorted(p.name for p in (target / "labelsTs").iterdir()) == ["hippocampus_020.nii.gz"]
    assert len(list((target / "imagesTr").iterdir())) == 3
    # Images are copied unchanged.
    original = (source / "imagesTr" / "hippocampus_001.nii.gz").read_bytes()
    assert (target / "imagesTr" / "hippocampus_001_0000.nii.gz").read_bytes() == original


# ----------------------------------------------------------------------------------------------------------------
# Real data from the development checkout; skipped in a clone without it.


@pytest.mark.skipif(not (SHARED_DATA / "msd_hippocampus").is_dir(), reason="shared hippocampus data not present")
def test_convert_real_hippocampus_cases(tmp_path):
    source = SHARED_DATA / "msd_hippocampus"
    target = convert_msd(source, tmp_path, 4, labels=HIPPOCAMPUS_LABELS, max_cases=3)

    assert target.name == "Dataset004_msd_hippocampus"
    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["numTraining"] == 3
    for label_path in sorted((source / "labelsTr").glob("*.nii.gz"))[:3]:
        case = label_path.name[: -len(".nii.gz")]
        image = sitk.ReadImage(str(target / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(target / "labelsTr" / label_path.name))
        assert image.GetSize() == label.GetSize()
        assert np.allclose(image.GetSpacing(), label.GetSpacing())
        assert np.allclose(image.GetOrigin(), label.GetOrigin())
        values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
        assert values <= {0, 1, 2}
        assert values >= {1, 2}


@pytest.mark.skipif(not (SHARED_DATA / "dsb2018_nuclei").is_dir(), reason="shared DSB 2018 data not present")
def test_convert_real_nuclei_cases(tmp_path):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    source = SHARED_DATA / "dsb2018_nuclei"
    target = convert_dsb2018(source, tmp_path, 5, max_cases=3)

    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert dataset["channel_names"] == {"0": "gray"}
    assert dataset["labels"] == {"background": 0, "nucleus": 1}
    assert dataset["numTraining"] == 3
    reader = NaturalImage2DIO()
    for case_dir in sorted((source / "stage1_train").iterdir())[:3]:
        images, _ = reader.read_images([str(target / "imagesTr" / f"{case_dir.name}_0000.png")])
        label, _ = reader.read_seg(str(target / "labelsTr" / f"{case_dir.name}.png"))
        assert images.shape == (1, 1, 256, 256)
        assert label.shape == (1, 1, 256, 256)
        union = np.zeros((256, 256), dtype=bool)
        for mask_path in (case_dir / "masks").glob("*.png"):
            union |= io.imread(mask_path) > 0
        assert np.array_equal(label[0, 0] == 1, union)
        assert set(np.unique(label).tolist()) == {0, 1}
        original = io.imread(case_dir / "images" / f"{case_dir.name}.png")
        assert np.array_equal(images[0, 0], original[..., 0])


# ----------------------------------------------------------------------------------------------------------------
# MSD conversion details and bad input.


def test_float_label_converted_to_integers(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    label_path = source / "labelsTr" / "case_001.nii.gz"
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    _write_nifti(label_path, label.astype(np.float32))

    target = _convert_small_msd(source, tmp_path / "raw")

    converted = sitk.ReadImage(str(target / "labelsTr" / "case_001.nii.gz"))
    assert converted.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(converted), label)


def test_msd_dataset_json_labels_used(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    metadata = {"labels": {"0": "background", "1": "head", "2": "body"}, "modality": {"0": "MRI"}}
    (source / "dataset.json").write_text(json.dumps(metadata))

    target = convert_msd(source, tmp_path / "raw", 12)

    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "head": 1, "body": 2}
    assert dataset["channel_names"] == {"0": "MRI"}
    assert target.name == "Dataset012_src"


def test_msd_4d_image_split_into_channels(tmp_path):
    source = _make_msd_source(tmp_path / "src", num_cases=1)
    channels = [sitk.GetImageFromArray(np.full((4, 5, 6), value, dtype=np.float32)) for value in (1.0, 2.0)]
    sitk.WriteImage(sitk.JoinSeries(channels), str(source / "imagesTr" / "case_000.nii.gz"))

    target = _convert_small_msd(source, tmp_path / "raw", channel_names=["T1", "T2"])

    for channel, value in enumerate((1.0, 2.0)):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "imagesTr" / f"case_000_{channel:04d}.nii.gz")))
        assert array.shape == (4, 5, 6)
        assert np.all(array == value)


def test_msd_image_without_label(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    (source / "labelsTr" / "case_002.nii.gz").unlink()

    with pytest.raises(DatasetConversionError, match="have no label"):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


def test_msd_label_outside_declared_set(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    label[0, 0, 0] = 3
    _write_nifti(source / "labelsTr" / "case_002.nii.gz", label)

    with pytest.raises(DatasetConversionError, match=r"values \[3\] outside the declared labels \[0, 1, 2\]"):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


def test_msd_fractional_float_label(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    _write_nifti(source / "labelsTr" / "case_001.nii.gz", np.full((4, 5, 6), 0.5, dtype=np.float32))

    with pytest.raises(DatasetConversionError, match="non-integer values"):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


@pytest.mark.parametrize(
    ("label_kwargs", "message"),
    [
        ({"spacing": (1.0, 1.0, 2.0)}, "differ in spacing"),
        ({"origin": (0.0, 5.0, 0.0)}, "differ in origin"),
    ],
)
def test_msd_geometry_mismatch(tmp_path, label_kwargs, message):
    source = _make_msd_source(tmp_path / "src")
    _write_nifti(source / "labelsTr" / "case_001.nii.gz", np.zeros((4, 5, 6), dtype=np.uint8), **label_kwargs)

    with pytest.raises(DatasetConversionError, match=message):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


def test_msd_size_mismatch(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    _write_nifti(source / "labelsTr" / "case_001.nii.gz", np.zeros((4, 5, 7), dtype=np.uint8))

    with pytest.raises(DatasetConversionError, match="has size"):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


def test_msd_unreadable_file(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    (source / "imagesTr" / "case_002.nii.gz").write_bytes(b"this is not a NIfTI file")

    with pytest.raises(DatasetConversionError, match="Cannot read .*case_002"):
        _convert_small_msd(source, tmp_path / "raw")
    _assert_nothing_written(tmp_path / "raw")


def test_msd_missing_labels_declaration(tmp_path):
    source = _make_msd_source(tmp_path / "src")

    with pytest.raises(DatasetConversionError, match="No labels declared"):
        convert_msd(source, tmp_path / "raw", 11)


def test_existing_dataset_rejected_then_overwritten(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    raw = tmp_path / "raw"
    target = _convert_small_msd(source, raw)
    marker = target / "marker.txt"
    marker.write_text("from the first conversion")

    with pytest.raises(DatasetConversionError, match="already exists.*--overwrite"):
        _convert_small_msd(source, raw)
    assert marker.exists()

    _convert_small_msd(source, raw, overwrite=True)
    assert not marker.exists()
    assert sorted(path.name for path in raw.iterdir()) == ["Dataset011_Small"]


def test_failed_overwrite_keeps_old_dataset(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    raw = tmp_path / "raw"
    target = _convert_small_msd(source, raw)
    (source / "imagesTr" / "case_002.nii.gz").write_bytes(b"broken")

    with pytest.raises(DatasetConversionError):
        _convert_small_msd(source, raw, overwrite=True)
    assert sorted(path.name for path in raw.iterdir()) == ["Dataset011_Small"]
    assert (target / "imagesTr" / "case_002_0000.nii.gz").stat().st_size > len(b"broken")


def test_dataset_id_used_by_other_name(tmp_path):
    source = _make_msd_source(tmp_path / "src")
    (tmp_path / "raw" / "Dataset011_Other").mkdir(parents=True)

    with pytest.raises(DatasetConversionError, match="already used by Dataset011_Other"):
        _convert_small_msd(source, tmp_path / "raw")


@pytest.mark.parametrize("dataset_id", [0, 1000])
def test_invalid_dataset_id(tmp_path, dataset_id):
    source = _make_msd_source(tmp_path / "src")

    with pytest.raises(DatasetConversionError, match="Invalid dataset ID"):
        convert_msd(source, tmp_path / "raw", dataset_id, labels=HIPPOCAMPUS_LABELS)


# ----------------------------------------------------------------------------------------------------------------
# DSB 2018 conversion details and bad input.


def test_dsb_union_of_masks(tmp_path):
    source = _make_dsb_source(tmp_path / "src")

    target = convert_dsb2018(source, tmp_path / "raw", 21, name="Nuclei")

    label = io.imread(target / "labelsTr" / "0000abcd.png")
    image = io.imread(target / "imagesTr" / "0000abcd_0000.png")
    assert image.shape == (16, 16)
    assert np.all(image == 20)
    assert label.shape == (16, 16)
    assert int(label.sum()) == 32
    assert set(np.unique(label).tolist()) == {0, 1}


def test_dsb_colour_images_written_as_rgb(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    image_path = source / "stage1_train" / "0001abcd" / "images" / "0001abcd.png"
    rgba = io.imread(image_path)
    rgba[..., 0] = 200
    io.imsave(image_path, rgba, check_contrast=False)

    target = convert_dsb2018(source, tmp_path / "raw", 21)

    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert io.imread(target / "imagesTr" / "0001abcd_0000.png").shape == (16, 16, 3)
    assert io.imread(target / "imagesTr" / "0000abcd_0000.png").shape == (16, 16, 3)


def test_dsb_colour_rejected_in_gray_mode(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    image_path = source / "stage1_train" / "0001abcd" / "images" / "0001abcd.png"
    rgba = io.imread(image_path)
    rgba[..., 2] = 99
    io.imsave(image_path, rgba, check_contrast=False)

    with pytest.raises(DatasetConversionError, match="unequal red, green and blue"):
        convert_dsb2018(source, tmp_path / "raw", 21, channels="gray")
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_image_without_masks(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    for mask in (source / "stage1_train" / "0001abcd" / "masks").iterdir():
        mask.unlink()

    with pytest.raises(DatasetConversionError, match="has no label"):
        convert_dsb2018(source, tmp_path / "raw", 21)
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_mask_values_outside_binary(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[0, 0] = 7
    io.imsave(source / "stage1_train" / "0001abcd" / "masks" / "nucleus0.png", mask, check_contrast=False)

    with pytest.raises(DatasetConversionError, match=r"values \[7\]"):
        convert_dsb2018(source, tmp_path / "raw", 21)
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_mask_size_mismatch(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    io.imsave(source / "stage1_train" / "0001abcd" / "masks" / "nucleus0.png", np.zeros((8, 16), np.uint8),
              check_contrast=False)

    with pytest.raises(DatasetConversionError, match="has size"):
        convert_dsb2018(source, tmp_path / "raw", 21)
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_non_constant_alpha(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    image_path = source / "stage1_train" / "0000abcd" / "images" / "0000abcd.png"
    rgba = io.imread(image_path)
    rgba[0, 0, 3] = 0
    io.imsave(image_path, rgba, check_contrast=False)

    with pytest.raises(DatasetConversionError, match="non-constant alpha"):
        convert_dsb2018(source, tmp_path / "raw", 21)
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_unreadable_png(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    (source / "stage1_train" / "0001abcd" / "images" / "0001abcd.png").write_bytes(b"not a png")

    with pytest.raises(DatasetConversionError, match="Cannot read .*0001abcd.png"):
        convert_dsb2018(source, tmp_path / "raw", 21)
    _assert_nothing_written(tmp_path / "raw")


def test_dsb_existing_dataset_rejected(tmp_path):
    source = _make_dsb_source(tmp_path / "src")
    convert_dsb2018(source, tmp_path / "raw", 21)

    with pytest.raises(DatasetConversionError, match="already exists"):
        convert_dsb2018(source, tmp_path / "raw", 21)


# ----------------------------------------------------------------------------------------------------------------
# Command line.


def test_cli_convert_msd(tmp_path, capsys):
    source = _make_msd_source(tmp_path / "src")
    raw = tmp_path / "raw"

    code = cli_main(["convert", "msd", str(source), "-d", "13", "--name", "Cli", "--raw-dir", str(raw),
                     "--labels", *HIPPOCAMPUS_LABELS, "--cases", "2"])

    assert code == 0
    assert capsys.readouterr().out.strip() == str(raw / "Dataset013_Cli")
    assert json.loads((raw / "Dataset013_Cli" / "dataset.json").read_text())["numTraining"] == 2


def test_cli_convert_uses_nnunet_raw(tmp_path, monkeypatch):
    source = _make_dsb_source(tmp_path / "src")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))

    assert cli_main(["convert", "dsb2018", str(source), "-d", "22"]) == 0
    assert (tmp_path / "raw" / "Dataset022_NucleiDSB2018" / "dataset.json").is_file()


def test_cli_convert_error_exit_code(tmp_path, monkeypatch):
    source = _make_msd_source(tmp_path / "src")
    monkeypatch.delenv("nnUNet_raw", raising=False)

    assert cli_main(["convert", "msd", str(source), "-d", "13", "--labels", *HIPPOCAMPUS_LABELS]) == 2
