"""Plugin trainers against the installed nnunetv2: construction, schedules, deep supervision, bfloat16."""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_resenc_plugin.errors import ResEncPluginError
from nnunet_resenc_plugin.training import trainers

ALL_TRAINERS = [getattr(trainers, name) for name in trainers.__all__]
EXPECTED_EPOCHS = {
    "nnUNetTrainerResEnc": 1000,
    "nnUNetTrainerResEnc_1epoch": 1,
    "nnUNetTrainerResEnc_5epochs": 5,
    "nnUNetTrainerResEnc_10epochs": 10,
    "nnUNetTrainerResEnc_50epochs": 50,
    "nnUNetTrainerResEnc_100epochs": 100,
    "nnUNetTrainerResEnc_250epochs": 250,
}
DATASET_ID = 501
CONFIGURATION = "3d_fullres"


@pytest.fixture(scope="module")
def planned_dataset(tmp_path_factory: pytest.TempPathFactory, write_synthetic_dataset) -> dict:
    """Plan and preprocess a synthetic 12x12x12-voxel dataset once with the plugin planner (preset S)."""
    from nnunet_resenc_plugin.planning.api import plan_experiment

    root = tmp_path_factory.mktemp("trainer_dataset")
    paths = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in paths.values():
        path.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, path in paths.items():
            patch.setenv(name, str(path))
        dataset_name = write_synthetic_dataset(paths["nnUNet_raw"], DATASET_ID, (12, 12, 12), num_cases=5)
        plans_name = plan_experiment(DATASET_ID, "S", configurations=[CONFIGURATION], preprocess=True,
                                     num_processes=1)
    folder = paths["nnUNet_preprocessed"] / dataset_name
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return {"paths": paths, "plans": plans, "dataset_json": dataset_json}


@pytest.fixture
def trainer_env(planned_dataset: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Set the nnU-Net path variables to the planned dataset and single-process data loading."""
    for name, path in planned_dataset["paths"].items():
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    for name in ("nnUNet_resenc_iterations_per_epoch", "nnUNet_resenc_val_iterations_per_epoch",
                 "nnUNet_resenc_cpu_bf16", "nnUNet_resenc_pretrained_weights"):
        monkeypatch.delenv(name, raising=False)
    return planned_dataset


def make_trainer(planned: dict, trainer_class=trainers.nnUNetTrainerResEnc, plans: dict | None = None,
                 fold: int = 0) -> nnUNetTrainer:
    plans = copy.deepcopy(plans if plans is not None else planned["plans"])
    plans["continue_training"] = False
    return trainer_class(plans=plans, configuration=CONFIGURATION, fold=fold,
                         dataset_json=copy.deepcopy(planned["dataset_json"]), device=torch.device("cpu"))


def with_stage_count(plans: dict, n_stages: int) -> dict:
    """Return a copy of ``plans`` whose 3d_fullres network has ``n_stages`` stages (strides 2 below stage 0)."""
    plans = copy.deepcopy(plans)
    configuration = plans["configurations"][CONFIGURATION]
    kwargs = configuration["architecture"]["arch_kwargs"]
    dims = len(configuration["patch_size"])
    kwargs["n_stages"] = n_stages
    kwargs["features_per_stage"] = [8 * 2**stage for stage in range(n_stages)]
    kwargs["kernel_sizes"] = [[3] * dims for _ in range(n_stages)]
    kwargs["strides"] = [[1] * dims] + [[2] * dims for _ in range(n_stages - 1)]
    kwargs["n_blocks_per_stage"] = [1] * n_stages
    kwargs["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    for key in ("bottleneck_channels",):
        kwargs.pop(key, None)
    configuration["patch_size"] = [2 ** (n_stages - 1) * 4] * dims
    configuration["batch_size"] = 2
    return plans


@pytest.mark.parametrize("trainer_class", ALL_TRAINERS, ids=lambda cls: cls.__name__)
def test_signature_matches_installed_nnunet(trainer_class):
    expected = inspect.signature(nnUNetTrainer.__init__).parameters
    actual = inspect.signature(trainer_class.__init__).parameters
    assert list(actual) == list(expected)
    for name, parameter in expected.items():
        assert actual[name].default == parameter.default, name


@pytest.mark.parametrize("trainer_class", ALL_TRAINERS, ids=lambda cls: cls.__name__)
def test_every_trainer_instantiates(trainer_env, trainer_class):
    trainer = make_trainer(trainer_env, trainer_class)

    assert trainer.num_epochs == EXPECTED_EPOCHS[trainer_class.__name__]
    assert trainer.num_iterations_per_epoch == 250
    assert trainer.num_val_iterations_per_epoch == 50
    assert trainer.__class__.__module__ == "nnunet_resenc_plugin.training.trainers"


def test_iterations_from_environment(trainer_env, monkeypatch):
    monkeypatch.setenv("nnUNet_resenc_iterations_per_epoch", "7")
    monkeypatch.setenv("nnUNet_resenc_val_iterations_per_epoch", "3")

    trainer = make_trainer(trainer_env, trainers.nnUNetTrainerResEnc_5epochs)

    assert trainer.num_iterations_per_epoch == 7
    assert trainer.num_val_iterations_per_epoch == 3
    assert trainer.num_epochs == 5


@pytest.mark.parametrize("value", ["0", "-4", "ten", "2.5"])
def test_invalid_iterations_rejected(trainer_env, monkeypatch, value):
    monkeypatch.setenv("nnUNet_resenc_iterations_per_epoch", value)

    with pytest.raises(ResEncPluginError, match="nnUNet_resenc_iterations_per_epoch"):
        make_trainer(trainer_env)


def test_invalid_plans_rejected_before_training(trainer_env):
    from nnunet_resenc_plugin.errors import PlansValidationError

    plans = copy.deepcopy(trainer_env["plans"])
    kwargs = plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]
    kwargs["strides"] = kwargs["strides"][:-1]
    trainer = make_trainer(trainer_env, plans=plans)

    with pytest.raises(PlansValidationError):
        trainer.initialize()
    assert trainer.network is None


def run_steps(trainer: nnUNetTrainer, steps: int) -> list[float]:
    """Start training as nnU-Net does and return the losses of ``steps`` training steps and one validation step."""
    trainer.on_train_start()
    try:
        trainer.on_train_epoch_start()
        losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(steps)]
        trainer.on_validation_epoch_start()
        with torch.no_grad():
            losses.append(float(trainer.validation_step(next(trainer.dataloader_val))["loss"]))
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
    return losses


@pytest.mark.parametrize("n_stages, expect_deep_supervision", [(1, False), (2, False), (3, True)])
def test_any_stage_count_gives_finite_loss(trainer_env, monkeypatch, n_stages, expect_deep_supervision):
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "0")
    trainer = make_trainer(trainer_env, plans=with_stage_count(trainer_env["plans"], n_stages))

    losses = run_steps(trainer, steps=2)

    assert trainer.enable_deep_supervision is expect_deep_supervision
    assert all(math.isfinite(loss) for loss in losses), losses


def test_planned_tiny_images_train(trainer_env, monkeypatch):
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "0")
    trainer = make_trainer(trainer_env)

    losses = run_steps(trainer, steps=2)

    assert all(math.isfinite(loss) for loss in losses), losses


@pytest.mark.parametrize("setting, expected", [("0", False), ("1", True)])
def test_cpu_bf16_switch(trainer_env, monkeypatch, setting, expected):
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", setting)

    trainer = make_trainer(trainer_env)

    assert trainer.cpu_bf16 is expected


def test_fp32_benchmark_trainer_turns_bf16_off(trainer_env, monkeypatch):
    from nnunet_resenc_plugin.benchmark import trainers as benchmark_trainers

    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "1")
    monkeypatch.setenv(benchmark_trainers.EPOCHS_ENV, "1")
    monkeypatch.setenv(benchmark_trainers.ITERATIONS_ENV, "1")

    bf16 = make_trainer(trainer_env, benchmark_trainers.nnUNetTrainerResEncBenchmark)
    fp32 = make_trainer(trainer_env, benchmark_trainers.nnUNetTrainerResEncBenchmarkFP32)

    assert bf16.cpu_bf16 is True
    assert fp32.cpu_bf16 is False


def test_cpu_bf16_step_runs_convolutions_in_bf16(trainer_env, monkeypatch):
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "1")
    trainer = make_trainer(trainer_env, plans=with_stage_count(trainer_env["plans"], 3))
    trainer.initialize()
    before = {name: value.detach().clone() for name, value in trainer.network.state_dict().items()}
    conv_dtypes = []
    for module in trainer.network.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda mod, args, out: conv_dtypes.append(out.dtype))

    losses = run_steps(trainer, steps=1)

    assert torch.bfloat16 in conv_dtypes
    assert all(math.isfinite(loss) for loss in losses), losses
    changed = [name for name, value in trainer.network.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, before[name])]
    assert changed, "no weight changed after a bfloat16 training step"
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())


def test_autocast_off_keeps_float32(trainer_env, monkeypatch):
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "0")
    trainer = make_trainer(trainer_env, plans=with_stage_count(trainer_env["plans"], 3))
    trainer.initialize()
    conv_dtypes = []
    for module in trainer.network.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda mod, args, out: conv_dtypes.append(out.dtype))

    run_steps(trainer, steps=1)

    assert conv_dtypes
    assert set(conv_dtypes) == {torch.float32}


def test_bf16_default_follows_cpu_features(monkeypatch):
    from nnunet_resenc_plugin.training import precision

    monkeypatch.delenv("nnUNet_resenc_cpu_bf16", raising=False)

    assert precision.use_cpu_bf16(torch.device("cpu")) is precision.cpu_has_native_bf16()
    assert precision.use_cpu_bf16(torch.device("cuda")) is False


def test_network_is_plugin_resencunet(trainer_env):
    from nnunet_resenc_plugin.networks import ResEncUNet

    trainer = make_trainer(trainer_env)
    trainer.initialize()

    assert isinstance(trainer.network, ResEncUNet)


def test_planned_very_small_images_train(nnunet_paths, write_synthetic_dataset, monkeypatch):
    from nnunet_resenc_plugin.planning.api import plan_experiment

    dataset_name = write_synthetic_dataset(nnunet_paths["nnUNet_raw"], 502, (6, 6, 6), num_cases=5)
    plans_name = plan_experiment(502, "S", configurations=[CONFIGURATION], preprocess=True, num_processes=1)
    folder = nnunet_paths["nnUNet_preprocessed"] / dataset_name
    planned = {"plans": json.loads((folder / f"{plans_name}.json").read_text()),
               "dataset_json": json.loads((folder / "dataset.json").read_text())}
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_resenc_cpu_bf16", "0")
    trainer = make_trainer(planned)

    losses = run_steps(trainer, steps=2)

    n_stages = planned["plans"]["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]["n_stages"]
    assert trainer.enable_deep_supervision is (n_stages >= 3)
    assert all(math.isfinite(loss) for loss in losses), losses
