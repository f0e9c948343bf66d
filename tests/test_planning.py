"""Planner tests on synthetic fingerprints: topology of tiny, thin and anisotropic images, presets and caps.

The datasets here hold tiny placeholder images; the planner reads only ``dataset.json`` and a hand-written
``dataset_fingerprint.json``, so each case sets the median shape and spacing directly.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from nnunet_resenc_plugin.errors import PlanningError
from nnunet_resenc_plugin.planning.planner import (
    MAX_BATCH_SIZE_2D,
    MIN_BATCH_SIZE,
    NETWORK_CLASS_NAME,
    ResEncPluginPlanner,
    cap_batch_size,
)
from nnunet_resenc_plugin.planning.presets import PRESETS, get_preset, parse_block_options
from nnunet_resenc_plugin.planning.topology import compute_topology, initial_patch_size, shrink_patch


def make_dataset(root: Path, monkeypatch, dataset_id: int, shape, spacing, cases: int = 4,
                 channels: int = 1, labels: int = 3) -> str:
    """Write a raw dataset with placeholder images and a fingerprint with the given median shape and spacing.

    ``cases`` sets ``numTraining`` (which scales the 5% batch cap); at most four placeholder files are written.
    """
    import SimpleITK as sitk

    monkeypatch.setenv("nnUNet_raw", str(root / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(root / "results"))
    name = f"Dataset{dataset_id:03d}_Synthetic"
    raw = root / "raw" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    placeholder = sitk.GetImageFromArray(np.zeros((4, 4, 4), dtype=np.float32))
    for case in range(min(cases, 4)):
        for channel in range(channels):
            sitk.WriteImage(placeholder, str(raw / "imagesTr" / f"case_{case:03d}_{channel:04d}.nii.gz"))
        sitk.WriteImage(sitk.Cast(placeholder, sitk.sitkUInt8), str(raw / "labelsTr" / f"case_{case:03d}.nii.gz"))
    dataset_json = {
        "channel_names": {str(c): "MRI" for c in range(channels)},
        "labels": {"background": 0, **{f"label{i}": i for i in range(1, labels)}},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    preprocessed = root / "preprocessed" / name
    preprocessed.mkdir(parents=True)
    intensity = {"max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
                 "percentile_99_5": 1.0, "std": 0.2}
    fingerprint = {
        "spacings": [list(spacing)] * cases,
        "shapes_after_crop": [list(shape)] * cases,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {str(c): intensity for c in range(channels)},
    }
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return name


# (spacing, median shape) -> (patch, strides, kernel sizes), from nnU-Net's get_pool_and_conv_props rule.
TOPOLOGY_CASES = [
    ((1.0, 1.0, 1.0), (10, 10, 10), [10, 10, 10], [[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [3, 3, 3]]),
    ((1.0, 1.0, 1.0), (15, 12, 8), [16, 12, 8], [[1, 1, 1], [2, 2, 2]], [[3, 3, 3], [3, 3, 3]]),
    ((1.0, 1.0, 1.0), (7, 7, 7), [7, 7, 7], [[1, 1, 1]], [[3, 3, 3]]),
    ((1.0, 1.0, 1.0), (5, 9, 6), [5, 9, 6], [[1, 1, 1]], [[3, 3, 3]]),
    ((5.0, 0.5, 0.5), (3, 256, 256), [3, 256, 256],
     [[1, 1, 1]] + [[1, 2, 2]] * 6, [[1, 3, 3]] * 3 + [[3, 3, 3]] * 4),
    ((5.0, 0.5, 0.5), (40, 256, 256), [40, 256, 256],
     [[1, 1, 1]] + [[1, 2, 2]] * 3 + [[2, 2, 2]] * 3, [[1, 3, 3]] * 3 + [[3, 3, 3]] * 4),
    ((1.0, 1.0), (167, 133), [192, 160], [[1, 1]] + [[2, 2]] * 5, [[3, 3]] * 6),
    ((1.0, 1.0, 1.0), (35, 50, 36), [40, 56, 40], [[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4),
]


@pytest.mark.parametrize("spacing, median, patch, strides, kernels", TOPOLOGY_CASES)
def test_topology_exact_values(spacing, median, patch, strides, kernels):
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    topology = compute_topology(spacing, initial_patch_size(spacing, median))

    assert list(topology.patch_size) == patch
    assert [list(s) for s in topology.strides] == strides
    assert [list(k) for k in topology.kernel_sizes] == kernels
    assert topology.n_stages == len(strides)
    _, stock_strides, stock_kernels, stock_patch, _ = get_pool_and_conv_props(list(spacing), list(median), 4, 999999)
    assert [list(s) for s in stock_strides] == strides
    assert [list(k) for k in stock_kernels] == kernels
    assert list(stock_patch) == patch


def test_shrink_patch_keeps_divisibility():
    spacing = (1.0, 1.0, 1.0)
    topology = compute_topology(spacing, [128, 128, 128])

    smaller = shrink_patch(topology, spacing, (128, 128, 96))

    # 128 - 32 = 96 pools only four times on that axis, so the step is 16 and 112 (= 16 * 7) is not skipped.
    assert smaller is not None
    assert list(smaller.patch_size) == [128, 128, 112]
    assert all(p % d == 0 for p, d in zip(smaller.patch_size, smaller.divisible_by))


def test_shrink_patch_stops_at_minimum():
    topology = compute_topology((1.0, 1.0), [4, 4])

    assert shrink_patch(topology, (1.0, 1.0), (4, 4)) is None


def test_cap_batch_size_rules():
    # 5% of 1e6 voxels over a 10x10x10 patch is 50 samples.
    assert cap_batch_size(500, (10, 10, 10), 1e6) == 50
    assert cap_batch_size(1, (10, 10, 10), 1e6) == MIN_BATCH_SIZE
    assert cap_batch_size(500, (10, 10), 1e9) == MAX_BATCH_SIZE_2D
    assert cap_batch_size(30, (10, 10), 1e9) == 30


def test_unknown_preset_lists_valid_names():
    with pytest.raises(PlanningError, match="Valid presets: S, M, L, XL"):
        get_preset("XXL")


def test_preset_lookup_ignores_case():
    assert get_preset("xl").name == "XL"
    assert get_preset("m").plans_name() == "nnUNetPluginResEncMPlans"


@pytest.mark.parametrize("options, message", [
    ({"norm": "layer"}, "Allowed values: instance, batch, group"),
    ({"blocks": "basic"}, "Unknown block option 'blocks'"),
    ({"stochastic_depth": 1.5}, r"must be in \[0.0, 1.0\)"),
    ({"downsampling": "stride"}, "conv, max_pool, avg_pool"),
])
def test_block_options_rejected(options, message):
    with pytest.raises(PlanningError, match=message):
        parse_block_options(options)


def test_presets_memory_targets_increase():
    targets = [PRESETS[name].gpu_memory_gb for name in ("S", "M", "L", "XL")]

    assert targets == sorted(targets)
    assert len(set(targets)) == 4


def _plan(tmp_path, monkeypatch, shape, spacing, cases=4, **kwargs):
    make_dataset(tmp_path, monkeypatch, 901, shape, spacing, cases=cases)
    planner = ResEncPluginPlanner(901, **kwargs)
    return planner.plan_experiment()


def test_planner_writes_plugin_architecture(tmp_path, monkeypatch):
    plans = _plan(tmp_path, monkeypatch, (35, 50, 36), (1.0, 1.0, 1.0))

    assert plans["plans_name"] == "nnUNetPluginResEncMPlans"
    assert set(plans["configurations"]) == {"2d", "3d_fullres"}
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["architecture"]["network_class_name"] == NETWORK_CLASS_NAME
    assert fullres["architecture"]["_kw_requires_import"] == ["conv_op", "norm_op", "dropout_op", "nonlin"]
    assert fullres["patch_size"] == [40, 56, 40]
    assert fullres["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert plans["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_2d"
    kwargs = fullres["architecture"]["arch_kwargs"]
    assert kwargs["n_blocks_per_stage"] == [1, 3, 4, 6]
    assert kwargs["features_per_stage"] == [32, 64, 128, 256]
    assert kwargs["block"] == "basic"
    assert kwargs["zero_init_residual"] is False
    saved = json.loads((tmp_path / "preprocessed" / "Dataset901_Synthetic" / "nnUNetPluginResEncMPlans.json")
                       .read_text())
    assert saved["resenc_plugin"]["preset"] == "M"


def test_planner_block_options_in_plans(tmp_path, monkeypatch):
    plans = _plan(tmp_path, monkeypatch, (20, 20, 20), (1.0, 1.0, 1.0), preset="S",
                  block_options={"norm": "batch", "block": "bottleneck", "squeeze_excitation": True,
                                 "stochastic_depth": 0.1, "downsampling": "max_pool",
                                 "zero_init_residual": "true"})

    kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert kwargs["norm_op"] == "torch.nn.modules.batchnorm.BatchNorm3d"
    assert kwargs["block"] == "bottleneck"
    assert kwargs["squeeze_excitation"] is True
    assert kwargs["stochastic_depth"] == 0.1
    assert kwargs["downsampling"] == "max_pool"
    assert kwargs["zero_init_residual"] is True
    assert kwargs["features_per_stage"][0] == 24


@pytest.mark.parametrize("shape, n_stages", [((10, 10, 10), 2), ((7, 7, 7), 1)])
def test_planner_tiny_images(tmp_path, monkeypatch, caplog, shape, n_stages):
    from nnunet_resenc_plugin.planning.validation import validate_plans

    with caplog.at_level(logging.INFO, logger="nnunet_resenc_plugin"):
        plans = _plan(tmp_path, monkeypatch, shape, (1.0, 1.0, 1.0))

    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["architecture"]["arch_kwargs"]["n_stages"] == n_stages
    assert fullres["architecture"]["arch_kwargs"]["n_conv_per_stage_decoder"] == [1] * (n_stages - 1)
    assert fullres["patch_size"] == list(shape)
    assert f"allows only {n_stages} stage(s)" in caplog.text
    validate_plans(plans)


def test_planner_thin_anisotropic(tmp_path, monkeypatch):
    plans = _plan(tmp_path, monkeypatch, (3, 256, 256), (5.0, 0.5, 0.5), cases=20)

    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["patch_size"][0] == 3
    assert fullres["spacing"] == [5.0, 0.5, 0.5]
    assert all(stride[0] == 1 for stride in fullres["architecture"]["arch_kwargs"]["strides"])
    # 20 cases of 3x256x256 voxels: 5% of the dataset is one 3x256x256 patch, so the minimum batch applies.
    assert fullres["batch_size"] == MIN_BATCH_SIZE


def test_planner_2d_batch_capped(tmp_path, monkeypatch, caplog):
    # 2D data as nnU-Net reads it: one slice with a 999 spacing on the first axis.
    # 5% of 5000 images of 167x133 pixels is 180 patches of 192x160, above the 2D cap.
    with caplog.at_level(logging.INFO, logger="nnunet_resenc_plugin"):
        plans = _plan(tmp_path, monkeypatch, (1, 167, 133), (999.0, 1.0, 1.0), cases=5000, preset="XL")

    assert set(plans["configurations"]) == {"2d"}
    config = plans["configurations"]["2d"]
    assert config["patch_size"] == [192, 160]
    assert config["batch_size"] == MAX_BATCH_SIZE_2D
    assert "patch [192, 160] is larger than the median image [167, 133]" in caplog.text


def test_presets_grow_with_memory_target(tmp_path, monkeypatch):
    make_dataset(tmp_path, monkeypatch, 902, (160, 160, 160), (1.0, 1.0, 1.0), cases=400)
    voxels_per_batch = []
    for name in ("S", "M", "L", "XL"):
        planner = ResEncPluginPlanner(902, preset=name)
        config = planner.get_plans_for_configuration(np.array([1.0, 1.0, 1.0]), np.array([160, 160, 160]),
                                                     planner.generate_data_identifier("3d_fullres"), 1e10, {})
        voxels_per_batch.append(config["batch_size"] * math.prod(config["patch_size"]))

    assert voxels_per_batch == sorted(voxels_per_batch)
    assert voxels_per_batch[0] < voxels_per_batch[-1]


def test_planner_rejects_bad_memory_target(tmp_path, monkeypatch):
    make_dataset(tmp_path, monkeypatch, 903, (20, 20, 20), (1.0, 1.0, 1.0))

    with pytest.raises(PlanningError, match="positive number of GB"):
        ResEncPluginPlanner(903, gpu_memory_target_in_gb=0)


def _fake_step_time(seconds_per_voxel: float, overhead: float, calls: list):
    """Stand-in for timed training steps: overhead plus a cost per voxel and sample."""

    def time_steps(build, input_channels, num_classes, patch_size, batch_sizes, device, precision, repeats=1):
        calls.append((tuple(patch_size), tuple(batch_sizes)))
        return {b: overhead + seconds_per_voxel * math.prod(patch_size) * b for b in batch_sizes}

    return time_steps


@pytest.mark.parametrize("budget, patch, batch", [
    # 40x56x40 at batch 2 takes 0.1 + 2 * 0.896 = 1.89 s; a 10 s budget fits batch floor(10 / 0.946) = 10.
    (10.0, [40, 56, 40], 10),
    # A 1 s budget asks for at most 47,400 voxels: the patch shrinks to 32x40x32 (40,960), which takes 0.92 s.
    (1.0, [32, 40, 32], 2),
])
def test_compute_aware_fit(monkeypatch, budget, patch, batch):
    from nnunet_resenc_plugin.planning import measure
    from nnunet_resenc_plugin.planning.compute_aware import ComputeBudget
    from nnunet_resenc_plugin.planning.memory import MemoryModel
    from nnunet_resenc_plugin.planning.planner import build_arch_kwargs

    calls = []
    monkeypatch.setattr(measure, "time_training_steps", _fake_step_time(1e-5, 0.1, calls))
    spacing, median = (1.0, 1.0, 1.0), (35.0, 50.0, 36.0)
    topology = compute_topology(spacing, initial_patch_size(spacing, median))
    preset, options = get_preset("M"), parse_block_options({})

    chosen, chosen_batch = ComputeBudget("cpu", budget).fit(
        topology, 60, spacing, median, 1, 3, lambda t: build_arch_kwargs(t, preset, options),
        MemoryModel("fp32"), 8e9, "fp32", "3d_fullres")

    assert list(chosen.patch_size) == patch
    assert chosen_batch == batch
    assert len(calls) == 2


def test_compute_budget_options():
    from nnunet_resenc_plugin.planning.compute_aware import DEFAULT_SECONDS_PER_ITERATION, ComputeBudget

    assert ComputeBudget.from_options(None, None) is None
    assert ComputeBudget.from_options("cpu", None).seconds_per_iteration == DEFAULT_SECONDS_PER_ITERATION
    assert ComputeBudget.from_options(None, 3.0).device == "cpu"
    with pytest.raises(PlanningError, match="Valid devices: cpu, cuda"):
        ComputeBudget.from_options("tpu", None)
    with pytest.raises(PlanningError, match="must be positive"):
        ComputeBudget.from_options("cpu", 0)
