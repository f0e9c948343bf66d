"""End-to-end: tiny images planned by the plugin train with a finite loss through nnU-Net's own training command.

Images of 8 to 15 voxels per axis give two-stage networks, 7 or fewer one stage; stock nnU-Net's loss weights
become NaN or crash there. Each case plans, preprocesses and trains one short epoch on the CPU, so the test is
marked slow (about a minute per case on two cores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _write_dataset(root: Path, dataset_id: int, shape: tuple[int, int, int], cases: int = 6) -> None:
    import SimpleITK as sitk

    raw = root / "raw" / f"Dataset{dataset_id:03d}_Tiny"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    generator = np.random.default_rng(0)
    for case in range(cases):
        labels = np.zeros(shape, dtype=np.uint8)
        labels[1:-1, 1:-1, : shape[2] // 2] = 1
        labels[1:-1, 1:-1, shape[2] // 2:] = 2
        image = labels.astype(np.float32) * 10 + generator.normal(size=shape).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(raw / "imagesTr" / f"tiny_{case:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(raw / "labelsTr" / f"tiny_{case:03d}.nii.gz"))
    (raw / "dataset.json").write_text(
        '{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, '
        f'"numTraining": {cases}, "file_ending": ".nii.gz"}}')


@pytest.mark.parametrize("dataset_id, shape, n_stages", [(911, (10, 10, 10), 2), (912, (6, 7, 6), 1)])
def test_tiny_images_train_finite(tmp_path, monkeypatch, dataset_id, shape, n_stages):
    if shutil.which("nnUNetv2_train", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("nnUNetv2_train is not installed next to this Python")
    from nnunet_resenc_plugin.planning.api import plan_experiment

    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))
    _write_dataset(tmp_path, dataset_id, shape)

    identifier = plan_experiment(dataset_id, preset="S", configurations=["3d_fullres"], preprocess=True,
                                 num_processes=1)

    env = dict(os.environ, nnUNet_n_proc_DA="0", nnUNet_resenc_iterations_per_epoch="2",
               nnUNet_resenc_val_iterations_per_epoch="1", nnUNet_compile="false")
    command = [os.path.join(os.path.dirname(sys.executable), "nnUNetv2_train"), str(dataset_id), "3d_fullres", "0",
               "-tr", "nnUNetTrainerResEnc_1epoch", "-p", identifier, "-device", "cpu", "--disable_checkpointing"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    output = next((tmp_path / "results").rglob("fold_0"))
    logs = list(output.glob("training_log_*.txt"))
    assert logs, f"no training log in {output}"
    text = logs[0].read_text()
    losses = [float(value) for value in re.findall(r"train_loss (\S+)", text)]
    assert losses, text[-2000:]
    assert np.isfinite(losses).all(), losses
    plans_file = tmp_path / "preprocessed" / f"Dataset{dataset_id:03d}_Tiny" / f"{identifier}.json"
    assert f'"n_stages": {n_stages}' in plans_file.read_text()
