"""End to end with stock nnU-Net commands: plan, preprocess, train, predict and evaluate real hippocampus cases.

Every nnU-Net command runs in a subprocess whose environment has no nnUNet_extTrainer, so the test also
proves that the installed plugin makes nnU-Net find its trainers. It takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATASET_ID = 904
PRESET = "S"
PLANS = f"nnUNetPluginResEnc{PRESET}Plans"
TRAINER = "nnUNetTrainerResEnc_1epoch"
CONFIGURATION = "3d_fullres"
NUM_TRAINING_CASES = 5
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def command_env(paths: dict[str, Path]) -> dict[str, str]:
    """Environment of a fresh shell plus nnU-Net's path variables and a two-iteration CPU schedule."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update({name: str(path) for name, path in paths.items()})
    env.update({
        "nnUNet_resenc_iterations_per_epoch": "2",
        "nnUNet_resenc_val_iterations_per_epoch": "1",
        # Data augmentation in the main process and one export worker: the fastest setting on two cores.
        "nnUNet_n_proc_DA": "0",
        "nnUNet_def_n_proc": "1",
    })
    return env


def run(command: list[str], env: dict[str, str], log: Path, timeout: int = 600) -> None:
    with open(log, "w") as handle:
        result = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}:\n{tail}")


def test_stock_commands_train_and_predict(tmp_path, hippocampus_source):
    import SimpleITK as sitk

    from nnunet_resenc_plugin.datasets import convert_msd

    paths = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        path.mkdir()
    cases = sorted(name[: -len(".nii.gz")] for name in os.listdir(hippocampus_source / "labelsTr"))
    chosen = cases[: NUM_TRAINING_CASES + 1]
    held_out = chosen[-1]
    source = tmp_path / "source"
    for folder in ("imagesTr", "labelsTr"):
        (source / folder).mkdir(parents=True)
        for case in chosen:
            (source / folder / f"{case}.nii.gz").symlink_to(hippocampus_source / folder / f"{case}.nii.gz")
    dataset_folder = convert_msd(source, paths["nnUNet_raw"], DATASET_ID, name="HippocampusE2E",
                                 labels=["background", "Anterior", "Posterior"], test_cases=[held_out])
    env = command_env(paths)

    run([str(BIN / "nnunet-resenc"), "plan", "-d", str(DATASET_ID), "--preset", PRESET, "-c", CONFIGURATION,
         "--preprocess", "-np", "1"], env, tmp_path / "plan.log")
    run([str(BIN / "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS,
         "-device", "cpu"], env, tmp_path / "train.log")

    results = paths["nnUNet_results"] / dataset_folder.name / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()
    train_log = (tmp_path / "train.log").read_text()
    assert "Plugin trainer: 1 epochs of 2 training and 1 validation iterations" in train_log
    assert (results / "fold_0" / "validation" / "summary.json").is_file()

    predictions = tmp_path / "predictions"
    run([str(BIN / "nnUNetv2_predict"), "-i", str(dataset_folder / "imagesTs"), "-o", str(predictions),
         "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
         "--disable_tta", "-npp", "1", "-nps", "1"], env, tmp_path / "predict.log")

    prediction_file = predictions / f"{held_out}.nii.gz"
    assert prediction_file.is_file()
    reference = sitk.ReadImage(str(dataset_folder / "imagesTs" / f"{held_out}_0000.nii.gz"))
    prediction = sitk.ReadImage(str(prediction_file))
    assert prediction.GetSize() == reference.GetSize()
    assert np.allclose(prediction.GetSpacing(), reference.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
    assert np.allclose(prediction.GetDirection(), reference.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(prediction)).tolist()) <= {0, 1, 2}

    run([str(BIN / "nnUNetv2_evaluate_folder"), str(dataset_folder / "labelsTs"), str(predictions),
         "-djfile", str(dataset_folder / "dataset.json"),
         "-pfile", str(paths["nnUNet_preprocessed"] / dataset_folder.name / f"{PLANS}.json"), "-np", "1"],
        env, tmp_path / "evaluate.log")
    summary = json.loads((predictions / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    for label in ("1", "2"):
        dice = summary["mean"][label]["Dice"]
        assert 0.0 <= dice <= 1.0, (label, dice)
