"""Planning and preprocessing of real cases through nnU-Net's own preprocessing, and stock nnU-Net loading the plans.

The hippocampus tests use the embedded demo subset and skip when it is absent. The nuclei test reads the DSB
2018 images from ../shared/data and skips when that folder is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import nnunet_resenc_plugin
from nnunet_resenc_plugin.cli import main
from nnunet_resenc_plugin.errors import PlansValidationError

DEMO = Path(nnunet_resenc_plugin.__file__).parent / "demo_data" / "hippocampus"
NUCLEI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018_nuclei"


def _paths(tmp_path: Path, monkeypatch) -> Path:
    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir(exist_ok=True)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return tmp_path


def _hippocampus(root: Path, dataset_id: int, cases: int) -> str:
    if not (DEMO / "imagesTr").is_dir():
        pytest.skip("embedded hippocampus demo data is absent")
    from nnunet_resenc_plugin.datasets.msd import convert_msd

    folder = convert_msd(DEMO, root / "raw", dataset_id, name="Hippocampus",
                         labels={"background": 0, "Anterior": 1, "Posterior": 2}, channel_names=["MRI"],
                         max_cases=cases)
    return Path(folder).name


@pytest.fixture(scope="module")
def planned_hippocampus(tmp_path_factory):
    """Plan and preprocess four demo cases once for the tests of this module."""
    monkeypatch = pytest.MonkeyPatch()
    root = _paths(tmp_path_factory.mktemp("hippocampus"), monkeypatch)
    name = _hippocampus(root, 4, cases=4)
    from nnunet_resenc_plugin.planning.api import plan_experiment

    identifier = plan_experiment(4, preset="M", preprocess=True, num_processes=1)
    yield root, name, identifier
    monkeypatch.undo()


def test_hippocampus_plans_and_preprocessing(planned_hippocampus):
    root, name, identifier = planned_hippocampus
    folder = root / "preprocessed" / name
    plans = json.loads((folder / f"{identifier}.json").read_text())

    assert identifier == "nnUNetPluginResEncMPlans"
    fullres = plans["configurations"]["3d_fullres"]
    # The first four demo cases have a median shape of 40 x 48.5 x 36 voxels at 1 mm.
    assert fullres["median_image_size_in_voxels"] == [40.0, 48.5, 36.0]
    assert fullres["patch_size"] == [40, 48, 40]
    # Four cases: 5% of the dataset is far below two patches, so the minimum batch of 2 applies.
    assert fullres["batch_size"] == 2
    assert fullres["data_identifier"] == "nnUNetPlans_3d_fullres"
    for identifier_folder in ("nnUNetPlans_3d_fullres", "nnUNetPlans_2d"):
        pickles = [f for f in os.listdir(folder / identifier_folder) if f.endswith(".pkl")]
        assert len(pickles) == 4


def test_stock_nnunet_loads_plans(planned_hippocampus):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_resenc_plugin.networks.resenc_unet import ResEncUNet

    root, name, identifier = planned_hippocampus
    manager = PlansManager(str(root / "preprocessed" / name / f"{identifier}.json"))
    for configuration in ("2d", "3d_fullres"):
        config = manager.get_configuration(configuration)
        network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                         config.network_arch_init_kwargs_req_import, 1, 3, allow_init=True,
                                         deep_supervision=True)
        assert isinstance(network, ResEncUNet)
        with torch.no_grad():
            outputs = network(torch.zeros((1, 1, *config.patch_size)))
        # One output per decoder stage, which is one less than the number of stages.
        assert len(outputs) == len(config.pool_op_kernel_sizes) - 1
        assert tuple(outputs[0].shape) == (1, 3, *config.patch_size)


def test_preprocessing_reused_on_second_run(planned_hippocampus, caplog):
    from nnunet_resenc_plugin.planning.api import preprocess_configurations

    root, name, identifier = planned_hippocampus
    with caplog.at_level("INFO", logger="nnunet_resenc_plugin"):
        done = preprocess_configurations(4, identifier, ["2d", "3d_fullres"], num_processes=1)

    assert done == []
    assert "Reusing preprocessed data" in caplog.text


def test_plan_command_rejects_unknown_preset(planned_hippocampus, capsys):
    with pytest.raises(SystemExit):
        main(["plan", "-d", "4", "--preset", "XXL"])

    assert "invalid choice: 'XXL'" in capsys.readouterr().err


def test_plan_command_rejects_bad_block_option(planned_hippocampus):
    assert main(["plan", "-d", "4", "--norm", "layer"]) == 2


def test_apply_plans_to_other_dataset(planned_hippocampus, tmp_path):
    from nnunet_resenc_plugin.planning.apply_plans import apply_plans
    from nnunet_resenc_plugin.planning.validation import validate_plans

    root, name, identifier = planned_hippocampus
    target = _hippocampus(root, 5, cases=2)
    source = root / "preprocessed" / name / f"{identifier}.json"

    new_identifier = apply_plans(str(source), 5, plans_name="Moved", num_processes=1)

    plans = json.loads((root / "preprocessed" / target / "Moved.json").read_text())
    validate_plans(plans)
    assert new_identifier == "Moved"
    assert plans["dataset_name"] == target
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "Moved_3d_fullres"
    original = json.loads(source.read_text())["configurations"]["3d_fullres"]
    assert plans["configurations"]["3d_fullres"]["architecture"] == original["architecture"]

    dataset_json = root / "raw" / target / "dataset.json"
    mismatched = json.loads(dataset_json.read_text())
    mismatched["labels"] = {"background": 0, "hippocampus": 1}
    dataset_json.write_text(json.dumps(mismatched))
    with pytest.raises(PlansValidationError, match="the plans were made for labels"):
        apply_plans(str(source), 5, plans_name="Moved2", num_processes=1)


@pytest.mark.skipif(not NUCLEI.is_dir(), reason="../shared/data/dsb2018_nuclei is absent")
def test_nuclei_2d_plan_and_preprocess(tmp_path, monkeypatch):
    from nnunet_resenc_plugin.datasets.dsb2018 import convert_dsb2018
    from nnunet_resenc_plugin.planning.api import plan_experiment

    root = _paths(tmp_path, monkeypatch)
    name = Path(convert_dsb2018(NUCLEI, root / "raw", 6, max_cases=4)).name

    identifier = plan_experiment(6, preset="M", preprocess=True, num_processes=1)

    plans = json.loads((root / "preprocessed" / name / f"{identifier}.json").read_text())
    assert set(plans["configurations"]) == {"2d"}
    config = plans["configurations"]["2d"]
    assert config["patch_size"] == [256, 256]
    assert config["batch_size"] == 2
    assert config["architecture"]["arch_kwargs"]["n_stages"] == 7
    pickles = [f for f in os.listdir(root / "preprocessed" / name / "nnUNetPlans_2d") if f.endswith(".pkl")]
    assert len(pickles) == 4


def test_apply_shipped_plans(planned_hippocampus):
    from nnunet_resenc_plugin.planning.apply_plans import apply_plans
    from nnunet_resenc_plugin.planning.validation import validate_plans

    root, name, _ = planned_hippocampus
    shipped = Path(__file__).resolve().parents[1] / "plans" / "ResEncS_3d.json"

    identifier = apply_plans(str(shipped), 4, plans_name="ShippedS", num_processes=1)

    plans = json.loads((root / "preprocessed" / name / "ShippedS.json").read_text())
    validate_plans(plans)
    template = json.loads(shipped.read_text())["configurations"]["3d_fullres"]
    assert identifier == "ShippedS"
    assert plans["configurations"]["3d_fullres"]["patch_size"] == template["patch_size"]
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["ZScoreNormalization"]
    assert plans["dataset_name"] == name


def test_plan_command_writes_plans(planned_hippocampus, capsys):
    root, name, _ = planned_hippocampus

    code = main(["plan", "-d", "4", "--preset", "s", "-c", "3d_fullres", "--plans-name", "CliPlans",
                 "--block", "bottleneck"])

    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "CliPlans"
    plans = json.loads((root / "preprocessed" / name / "CliPlans.json").read_text())
    assert plans["resenc_plugin"]["preset"] == "S"
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["block"] == "bottleneck"
