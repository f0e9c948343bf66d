"""Demo pieces: held-out split, output folder handling, nnU-Net step commands, evaluation and report figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_resenc_plugin.demo.pipeline import DEMO_DATA, MARKER_FILE, held_out_cases, prepare_output
from nnunet_resenc_plugin.demo.report import (
    dice_rows,
    format_dice_table,
    per_case_dice,
    plot_dice_per_label,
    plot_overlay,
    plot_training_curve,
)
from nnunet_resenc_plugin.demo.steps import (
    NnunetFolders,
    PipelineStepError,
    evaluate_predictions,
    plan_command,
    run_step,
    train_command,
)
from nnunet_resenc_plugin.errors import ResEncPluginError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_held_out_cases_every_fifth():
    cases = held_out_cases(DEMO_DATA, every=5)

    assert len(cases) == 9
    assert cases[0] == "hippocampus_001"
    assert cases[1] == "hippocampus_049"


def test_prepare_output_rejects_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("user data")

    with pytest.raises(ResEncPluginError, match="not empty"):
        prepare_output(tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_prepare_output_clears_earlier_demo(tmp_path):
    prepare_output(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "old.md").write_text("old")
    (tmp_path / "keep.txt").write_text("not a demo folder")

    prepare_output(tmp_path)

    assert (tmp_path / MARKER_FILE).is_file()
    assert not (tmp_path / "report").exists()
    assert (tmp_path / "keep.txt").exists()


def test_environment_points_at_own_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/somewhere/else")
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    folders = NnunetFolders(tmp_path)

    planning = folders.environment("cpu")
    training = folders.environment("cpu", {"EXTRA": "1"}, training=True)

    assert planning["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
    assert training["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert "nnUNet_n_proc_DA" not in planning
    assert training["nnUNet_n_proc_DA"] == "0"
    assert training["EXTRA"] == "1"
    assert "ext_trainer" in training["nnUNet_extTrainer"]
    assert os.environ["nnUNet_raw"] == "/somewhere/else"


def test_step_commands():
    plan = plan_command(4, "M", "3d_fullres", "cpu", 2.0, plans_name="P", block_options={"block": "bottleneck",
                                                                                          "squeeze_excitation": True})
    train = train_command(4, "3d_fullres", 0, "T", "P", "cpu", resume=True)

    assert plan[3:] == ["plan", "-d", "4", "--preset", "M", "-c", "3d_fullres", "--preprocess", "-np", "2",
                        "--device", "cpu", "--seconds-per-iteration", "2.0", "--plans-name", "P",
                        "--block", "bottleneck", "--squeeze-excitation"]
    assert train[3:] == ["4", "3d_fullres", "0", "-tr", "T", "-p", "P", "-device", "cpu", "--c"]


def test_run_step_reports_failure(tmp_path):
    command = ["python3", "-c", "import sys; print('child output'); sys.exit(3)"]

    with pytest.raises(PipelineStepError, match="exit code 3"):
        run_step("failing", command, dict(os.environ), tmp_path / "step.log")
    assert "child output" in (tmp_path / "step.log").read_text()


def _write_label(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def test_evaluation_and_dice_table(tmp_path):
    reference = np.zeros((6, 6, 6), dtype=np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    reference[3:5, 3:5, 3:5] = 2
    prediction = reference.copy()
    prediction[3:5, 3:5, 3:5] = 0  # label 2 missed entirely
    _write_label(tmp_path / "ref" / "case_a.nii.gz", reference)
    _write_label(tmp_path / "pred" / "case_a.nii.gz", prediction)
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "one": 1, "two": 2}, "file_ending": ".nii.gz",
                                        "channel_names": {"0": "MRI"}, "numTraining": 1}))

    summary = evaluate_predictions(tmp_path / "ref", tmp_path / "pred", dataset_json)
    rows = dice_rows(summary, {0: "background", 1: "one", 2: "two"})
    table = format_dice_table(rows, 1)

    assert [row[0] for row in rows] == ["one", "two", "mean (foreground)"]
    assert rows[0][1] == pytest.approx(1.0)
    assert rows[1][1] == pytest.approx(0.0)
    assert rows[2][1] == pytest.approx(0.5)
    assert "| one | 1.000 | 1.000 | 1.000 |" in table
    assert (tmp_path / "pred" / "summary.json").is_file()


def test_dice_figure_reads_integer_and_string_keys(tmp_path):
    reference = np.zeros((6, 6, 6), dtype=np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    _write_label(tmp_path / "ref" / "case_a.nii.gz", reference)
    _write_label(tmp_path / "pred" / "case_a.nii.gz", reference)
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "one": 1}, "file_ending": ".nii.gz",
                                        "channel_names": {"0": "MRI"}, "numTraining": 1}))

    in_memory = evaluate_predictions(tmp_path / "ref", tmp_path / "pred", dataset_json)
    from_json = json.loads((tmp_path / "pred" / "summary.json").read_text())
    plot_dice_per_label(in_memory, {0: "background", 1: "one"}, tmp_path / "dice.png")

    assert per_case_dice(in_memory, 1).tolist() == [1.0]
    assert per_case_dice(from_json, 1).tolist() == [1.0]
    assert (tmp_path / "dice.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_figures(tmp_path):
    image = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32)
    label = np.zeros((5, 8, 8), dtype=np.uint8)
    label[3, 2:6, 2:6] = 1
    sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / "image.nii.gz"))
    _write_label(tmp_path / "reference.nii.gz", label)
    _write_label(tmp_path / "prediction.nii.gz", label)
    log = {"train_losses": [0.5, 0.2], "val_losses": [0.6, 0.3], "mean_fg_dice": [0.1, 0.4],
           "ema_fg_dice": [0.1, 0.13]}

    slice_index = plot_overlay(tmp_path / "image.nii.gz", tmp_path / "reference.nii.gz",
                               tmp_path / "prediction.nii.gz", tmp_path / "overlay.png")
    plot_training_curve(log, tmp_path / "curve.png")

    assert slice_index == 3
    assert (tmp_path / "overlay.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
