"""End to end with stock nnU-Net commands on real hippocampus cases.

The module plans and preprocesses a handful of cases, trains two folds with stock ``nnUNetv2_train``, then
predicts, evaluates, validates again, resumes an interrupted training, picks the best configuration, ensembles,
and exports and installs the model as a zip. Every nnU-Net command runs in a subprocess whose environment has no
nnUNet_extTrainer, so the tests also prove that the installed plugin makes nnU-Net find its trainers. The
module takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATASET_ID = 904
PRESET = "S"
PLANS = f"nnUNetPluginResEnc{PRESET}Plans"
TRAINER = "nnUNetTrainerResEnc_1epoch"
RESUME_TRAINER = "nnUNetTrainerResEnc_5epochs"
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


@dataclass
class Workspace:
    """A preprocessed hippocampus dataset with folds 0 and 1 trained by stock nnUNetv2_train."""

    root: Path
    paths: dict[str, Path]
    env: dict[str, str]
    dataset_folder: Path
    held_out: str

    def results(self, trainer: str = TRAINER) -> Path:
        return self.paths["nnUNet_results"] / self.dataset_folder.name / f"{trainer}__{PLANS}__{CONFIGURATION}"

    def predict(self, output: Path, folds: list[str], *extra: str, env: dict[str, str] | None = None) -> None:
        run([str(BIN / "nnUNetv2_predict"), "-i", str(self.dataset_folder / "imagesTs"), "-o", str(output),
             "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", *folds, "-tr", TRAINER, "-p", PLANS,
             "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1", *extra],
            env or self.env, self.root / f"predict_{output.name}.log")

    def check_prediction(self, prediction_file: Path) -> np.ndarray:
        """Assert that a predicted label map has the test image's geometry and only known labels."""
        import SimpleITK as sitk

        assert prediction_file.is_file()
        reference = sitk.ReadImage(str(self.dataset_folder / "imagesTs" / f"{self.held_out}_0000.nii.gz"))
        prediction = sitk.ReadImage(str(prediction_file))
        assert prediction.GetSize() == reference.GetSize()
        assert np.allclose(prediction.GetSpacing(), reference.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
        assert np.allclose(prediction.GetDirection(), reference.GetDirection())
        labels = sitk.GetArrayFromImage(prediction)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
        return labels


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, hippocampus_source) -> Workspace:
    from nnunet_resenc_plugin.datasets import convert_msd

    root = tmp_path_factory.mktemp("end_to_end")
    paths = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        path.mkdir()
    cases = sorted(name[: -len(".nii.gz")] for name in os.listdir(hippocampus_source / "labelsTr"))
    chosen = cases[: NUM_TRAINING_CASES + 1]
    held_out = chosen[-1]
    source = root / "source"
    for folder in ("imagesTr", "labelsTr"):
        (source / folder).mkdir(parents=True)
        for case in chosen:
            (source / folder / f"{case}.nii.gz").symlink_to(hippocampus_source / folder / f"{case}.nii.gz")
    dataset_folder = convert_msd(source, paths["nnUNet_raw"], DATASET_ID, name="HippocampusE2E",
                                 labels=["background", "Anterior", "Posterior"], test_cases=[held_out])
    env = command_env(paths)

    run([str(BIN / "nnunet-resenc"), "plan", "-d", str(DATASET_ID), "--preset", PRESET, "-c", CONFIGURATION,
         "--preprocess", "-np", "1"], env, root / "plan.log")
    for fold in ("0", "1"):
        run([str(BIN / "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, fold, "-tr", TRAINER, "-p", PLANS,
             "-device", "cpu", "--npz"], env, root / f"train_fold{fold}.log")
    return Workspace(root, paths, env, dataset_folder, held_out)


def test_stock_commands_train_and_predict(workspace):
    for fold in ("0", "1"):
        fold_folder = workspace.results() / f"fold_{fold}"
        assert (fold_folder / "checkpoint_final.pth").is_file()
        assert (fold_folder / "validation" / "summary.json").is_file()
        # --npz exports the softmax of every validation case next to its label map.
        assert list((fold_folder / "validation").glob("*.npz"))
    train_log = (workspace.root / "train_fold0.log").read_text()
    assert "Plugin trainer: 1 epochs of 2 training and 1 validation iterations" in train_log

    predictions = workspace.root / "predictions"
    workspace.predict(predictions, ["0"])
    workspace.check_prediction(predictions / f"{workspace.held_out}.nii.gz")

    run([str(BIN / "nnUNetv2_evaluate_folder"), str(workspace.dataset_folder / "labelsTs"), str(predictions),
         "-djfile", str(workspace.dataset_folder / "dataset.json"),
         "-pfile", str(workspace.paths["nnUNet_preprocessed"] / workspace.dataset_folder.name / f"{PLANS}.json"),
         "-np", "1"], workspace.env, workspace.root / "evaluate.log")
    summary = json.loads((predictions / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    for label in ("1", "2"):
        dice = summary["mean"][label]["Dice"]
        assert 0.0 <= dice <= 1.0, (label, dice)


def test_validation_only_run_exports_probabilities(workspace):
    validation = workspace.results() / "fold_0" / "validation"
    for path in validation.iterdir():
        path.unlink()
    run([str(BIN / "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS,
         "-device", "cpu", "--val", "--npz"], workspace.env, workspace.root / "val.log")
    assert (validation / "summary.json").is_file()
    assert list(validation.glob("*.npz"))
    assert list(validation.glob("*.nii.gz"))


def test_resume_continues_an_interrupted_training(workspace):
    """--c picks up a checkpoint written after epoch 2 of 5 and trains epochs 2 to 4 only."""
    import torch

    command = [str(BIN / "nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "2", "-tr", RESUME_TRAINER, "-p",
               PLANS, "-device", "cpu"]
    env = {**workspace.env, "nnUNet_resenc_iterations_per_epoch": "1"}
    run(command, env, workspace.root / "train_5epochs.log")
    fold_folder = workspace.results(RESUME_TRAINER) / "fold_2"
    final = fold_folder / "checkpoint_final.pth"

    # Rewind the finished run to the state nnU-Net saves after epoch 2, as if the process had died there.
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 5
    assert checkpoint["trainer_name"] == RESUME_TRAINER
    checkpoint["current_epoch"] = 2
    checkpoint["logging"] = {key: values[:2] for key, values in checkpoint["logging"].items()}
    torch.save(checkpoint, fold_folder / "checkpoint_latest.pth")
    final.unlink()

    run(command + ["--c"], env, workspace.root / "resume.log")
    resume_log = (workspace.root / "resume.log").read_text()
    epochs = [int(number) for number in re.findall(r": Epoch (\d+)$", resume_log, flags=re.MULTILINE)]
    assert epochs == [2, 3, 4]
    resumed = torch.load(final, map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 5
    assert len(resumed["logging"]["mean_fg_dice"]) == 5
    assert (fold_folder / "validation" / "summary.json").is_file()


def test_best_configuration_ensemble_and_zip_export(workspace):
    run([str(BIN / "nnUNetv2_find_best_configuration"), str(DATASET_ID), "-c", CONFIGURATION, "-tr", TRAINER,
         "-p", PLANS, "-f", "0", "1", "-np", "1"], workspace.env, workspace.root / "find_best.log")
    dataset_results = workspace.paths["nnUNet_results"] / workspace.dataset_folder.name
    information = json.loads((dataset_results / "inference_information.json").read_text())
    assert information["best_model_or_ensemble"]["selected_model_or_models"][0]["trainer"] == TRAINER
    assert (dataset_results / "inference_instructions.txt").is_file()

    # Both folds in one call, and each fold alone with probabilities for nnUNetv2_ensemble.
    case = f"{workspace.held_out}.nii.gz"
    both_folds = workspace.root / "predictions_folds_0_1"
    workspace.predict(both_folds, ["0", "1"])
    both_labels = workspace.check_prediction(both_folds / case)
    singles = []
    for fold in ("0", "1"):
        output = workspace.root / f"probabilities_fold{fold}"
        workspace.predict(output, [fold], "--save_probabilities")
        assert (output / f"{workspace.held_out}.npz").is_file()
        singles.append(str(output))
    ensembled = workspace.root / "ensembled"
    run([str(BIN / "nnUNetv2_ensemble"), "-i", *singles, "-o", str(ensembled), "-np", "1"], workspace.env,
        workspace.root / "ensemble.log")
    workspace.check_prediction(ensembled / case)

    archive = workspace.root / "model.zip"
    run([str(BIN / "nnUNetv2_export_model_to_zip"), "-d", str(DATASET_ID), "-o", str(archive), "-c",
         CONFIGURATION, "-tr", TRAINER, "-p", PLANS, "-f", "0", "1"], workspace.env, workspace.root / "export.log")
    installed_results = workspace.root / "installed_results"
    installed_results.mkdir()
    installed_env = {**workspace.env, "nnUNet_results": str(installed_results)}
    run([str(BIN / "nnUNetv2_install_pretrained_model_from_zip"), str(archive)], installed_env,
        workspace.root / "install.log")
    assert (installed_results / workspace.dataset_folder.name / workspace.results().name / "fold_1"
            / "checkpoint_final.pth").is_file()
    from_zip = workspace.root / "predictions_from_zip"
    workspace.predict(from_zip, ["0", "1"], env=installed_env)
    assert np.array_equal(workspace.check_prediction(from_zip / case), both_labels)
