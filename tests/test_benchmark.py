"""Benchmark: HD95, tables, and a run at a tiny budget on a small synthetic dataset."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from nnunet_resenc_plugin.benchmark.metrics import hd95, seconds_per_iteration
from nnunet_resenc_plugin.benchmark.runner import BenchmarkConfig, resolve_dataset, run_benchmark
from nnunet_resenc_plugin.benchmark.tables import markdown_table
from nnunet_resenc_plugin.errors import ResEncPluginError


def _brute_force_hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    structure = ndimage.generate_binary_structure(reference.ndim, 1)
    surfaces = [mask & ~ndimage.binary_erosion(mask, structure, border_value=0) for mask in (reference, prediction)]
    points = [np.argwhere(surface) * np.asarray(spacing) for surface in surfaces]
    pairwise = np.linalg.norm(points[0][:, None, :] - points[1][None, :, :], axis=-1)
    return float(np.percentile(np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)]), 95))


def test_hd95_single_voxels_with_spacing():
    reference = np.zeros((8, 8, 8), dtype=bool)
    prediction = np.zeros_like(reference)
    reference[1, 4, 4] = True
    prediction[4, 4, 4] = True

    assert hd95(reference, prediction, (2.0, 1.0, 1.0)) == pytest.approx(6.0)


def test_hd95_identical_masks_is_zero():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:7, 3:8] = True

    assert hd95(mask, mask, (1.0, 1.0)) == 0.0


def test_hd95_matches_brute_force():
    rng = np.random.default_rng(3)
    reference = ndimage.binary_dilation(rng.random((12, 12, 12)) > 0.97, iterations=1)
    prediction = ndimage.binary_dilation(rng.random((12, 12, 12)) > 0.97, iterations=1)
    spacing = (1.5, 1.0, 0.5)

    assert hd95(reference, prediction, spacing) == pytest.approx(_brute_force_hd95(reference, prediction, spacing))


def test_hd95_empty_masks():
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)

    assert hd95(empty, empty, (1.0, 1.0)) == 0.0
    assert math.isinf(hd95(empty, full, (1.0, 1.0)))


def test_hd95_rejects_wrong_spacing():
    mask = np.ones((4, 4), dtype=bool)

    with pytest.raises(ValueError, match="Spacing"):
        hd95(mask, mask, (1.0, 1.0, 1.0))


def test_seconds_per_iteration_skips_first_epoch():
    log = {"epoch_start_timestamps": [0.0, 100.0, 110.0, 121.0], "epoch_end_timestamps": [90.0, 110.0, 121.0, 130.0]}

    assert seconds_per_iteration(log, 5) == pytest.approx(10.0 / 5)


def test_markdown_table_mean_and_spread():
    cells = [
        {"dataset": "d", "system": "s", "dice_mean": 0.5, "hd95_mean": 2.0, "seconds_per_iteration": 1.0,
         "peak_memory_mb": 100.0, "parameters": 2e6, "gflops_per_patch": 3.0, "dice_first": 0.4},
        {"dataset": "d", "system": "s", "dice_mean": 0.7, "hd95_mean": 4.0, "seconds_per_iteration": 1.0,
         "peak_memory_mb": 100.0, "parameters": 2e6, "gflops_per_patch": 3.0, "dice_first": 0.6},
    ]

    table = markdown_table(cells)

    row = table.splitlines()[2]
    assert row.startswith("| d | s | 2 | 0.600 ± 0.141 | 3.00 ± 1.41 |")
    assert "2.00 ± 0.00" in row
    assert table.splitlines()[0].endswith("| Dice first |")


def test_resolve_dataset_names_and_ids(tmp_path):
    assert resolve_dataset("hippocampus", tmp_path).configuration == "3d_fullres"
    assert resolve_dataset("nuclei", tmp_path).configuration == "2d"
    assert resolve_dataset("27:2d", tmp_path).dataset_id == 27
    assert resolve_dataset("27:2d", tmp_path).configuration == "2d"
    with pytest.raises(ResEncPluginError, match="Unknown dataset"):
        resolve_dataset("liver", tmp_path)


@pytest.mark.slow
def test_benchmark_tiny_budget(tmp_path, monkeypatch, write_synthetic_dataset):
    raw = tmp_path / "user_raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    write_synthetic_dataset(raw, 31, (16, 16, 16), num_cases=6)
    output = tmp_path / "bench"
    config = BenchmarkConfig(
        output=output, datasets=[resolve_dataset("31", tmp_path)], systems=["stock_default", "plugin_M"],
        folds=[0], seeds=[0], epochs=1, iterations=2, batch_cap=2, device="cpu", num_processes=1,
    )

    results = run_benchmark(config)

    assert [(cell["system"], cell["fold"], cell["seed"]) for cell in results] == [
        ("stock_default", 0, 0), ("plugin_M", 0, 0)]
    with open(output / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for column in ("dice_mean", "dice_first", "dice_second", "hd95_mean", "seconds_per_iteration",
                   "peak_memory_mb", "parameters", "gflops_per_patch", "batch_size"):
        assert column in rows[0]
    for row in rows:
        assert 0.0 <= float(row["dice_mean"]) <= 1.0
        assert int(row["batch_size"]) <= 2
        assert int(row["parameters"]) > 0
        assert float(row["gflops_per_patch"]) > 0
        assert float(row["peak_memory_mb"]) > 0
    table = (output / "results.md").read_text().splitlines()
    assert len(table) == 4
    assert "| 31 | plugin_M | 1 |" in table[3]
    for plot in ("dice.png", "dice_vs_time.png"):
        assert (output / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run finds every cell finished and trains nothing.
    train_logs = sorted((output / "logs").glob("train_*.log"))
    sizes = [path.stat().st_size for path in train_logs]
    again = run_benchmark(config)
    assert [cell["dice_mean"] for cell in again] == [cell["dice_mean"] for cell in results]
    assert [path.stat().st_size for path in train_logs] == sizes
    cell_file = output / "cells" / "31__plugin_M__fold0__seed0.json"
    assert json.loads(cell_file.read_text())["system"] == "plugin_M"


def test_cli_lists_every_benchmark_system():
    from nnunet_resenc_plugin.benchmark.systems import SYSTEMS
    from nnunet_resenc_plugin.cli.benchmark import SYSTEM_NAMES

    assert set(SYSTEM_NAMES) == set(SYSTEMS)


def test_fp32_system_shares_plans_but_not_results_folder():
    from nnunet_resenc_plugin.benchmark.systems import get_system

    bf16, fp32 = get_system("plugin_M"), get_system("plugin_M_fp32")

    assert fp32.plans_name == bf16.plans_name
    assert fp32.trainer != bf16.trainer

