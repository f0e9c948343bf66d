"""Tests of plans validation and the ``validate-plans`` command."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nnunet_resenc_plugin.cli import main
from nnunet_resenc_plugin.errors import PlansValidationError
from nnunet_resenc_plugin.planning.planner import architecture_entry, build_arch_kwargs
from nnunet_resenc_plugin.planning.presets import get_preset, parse_block_options
from nnunet_resenc_plugin.planning.topology import compute_topology
from nnunet_resenc_plugin.planning.validation import resolve_configuration, validate_plans


def _plans() -> dict:
    topology = compute_topology((1.0, 1.0, 1.0), (40, 56, 40))
    kwargs = build_arch_kwargs(topology, get_preset("M"), parse_block_options({}))
    return {
        "plans_name": "test",
        "configurations": {
            "3d_fullres": {
                "patch_size": list(topology.patch_size),
                "batch_size": 2,
                "spacing": [1.0, 1.0, 1.0],
                "architecture": architecture_entry(kwargs),
            },
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    }


def _kwargs(plans: dict) -> dict:
    return plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]


def test_valid_plans_pass():
    validate_plans(_plans())
    validate_plans(_plans(), "3d_cascade_fullres")


def test_list_length_disagrees_with_n_stages():
    plans = _plans()
    _kwargs(plans)["kernel_sizes"] = _kwargs(plans)["kernel_sizes"][:-1]

    with pytest.raises(PlansValidationError, match="kernel_sizes has 3 entries but n_stages = 4 needs 4"):
        validate_plans(plans)


def test_decoder_list_needs_one_less():
    plans = _plans()
    _kwargs(plans)["n_conv_per_stage_decoder"] = [1, 1, 1, 1]

    with pytest.raises(PlansValidationError, match="n_conv_per_stage_decoder has 4 entries .* needs 3"):
        validate_plans(plans)


def test_first_stride_must_be_one():
    plans = _plans()
    _kwargs(plans)["strides"][0] = [2, 2, 2]

    with pytest.raises(PlansValidationError, match=r"first stride must be all 1, got \[2, 2, 2\]"):
        validate_plans(plans)


def test_patch_not_divisible():
    plans = _plans()
    plans["configurations"]["3d_fullres"]["patch_size"] = [40, 52, 40]

    with pytest.raises(PlansValidationError, match=r"not divisible by the total stride \[8, 8, 8\] on axis \[1\]"):
        validate_plans(plans)


def test_argument_not_accepted_by_network():
    plans = _plans()
    _kwargs(plans)["n_conv_per_stage"] = [2, 2, 2, 2]

    with pytest.raises(PlansValidationError, match="'n_conv_per_stage'.* is not accepted by ResEncUNet"):
        validate_plans(plans)


def test_unknown_dotted_paths():
    plans = _plans()
    _kwargs(plans)["norm_op"] = "torch.nn.InstanceNorm9d"
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "nowhere.Network"

    with pytest.raises(PlansValidationError) as error:
        validate_plans(plans)

    assert "network_class_name 'nowhere.Network' cannot be imported" in str(error.value)
    assert "arch_kwargs['norm_op'] = 'torch.nn.InstanceNorm9d' cannot be imported" in str(error.value)


def test_stock_network_plans_checked():
    plans = _plans()
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    architecture["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    for key in ("block", "downsampling", "shortcut", "squeeze_excitation", "stochastic_depth", "zero_init_residual"):
        del architecture["arch_kwargs"][key]
    validate_plans(plans)

    architecture["arch_kwargs"]["squeeze_excitation"] = True
    with pytest.raises(PlansValidationError, match="'squeeze_excitation'.* is not accepted by ResidualEncoderUNet"):
        validate_plans(plans)


def test_bad_batch_and_missing_configuration():
    plans = _plans()
    plans["configurations"]["3d_fullres"]["batch_size"] = 0

    with pytest.raises(PlansValidationError, match="batch_size must be a positive integer, got 0"):
        validate_plans(plans)
    with pytest.raises(PlansValidationError, match="Configuration '2d' not found"):
        validate_plans(_plans(), "2d")


def test_inherits_from_is_shallow_merge():
    plans = _plans()
    plans["configurations"]["3d_cascade_fullres"]["batch_size"] = 5

    merged = resolve_configuration(plans, "3d_cascade_fullres")

    assert merged["batch_size"] == 5
    assert merged["patch_size"] == [40, 56, 40]
    assert "inherits_from" not in merged


def test_validate_plans_command(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_plans()))
    bad_plans = copy.deepcopy(_plans())
    _kwargs(bad_plans)["strides"][0] = [1, 2, 1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_plans))

    assert main(["validate-plans", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate-plans", str(bad)]) == 2
    assert main(["validate-plans", str(tmp_path / "missing.json")]) == 2


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "plans").glob("*.json"))


def test_shipped_plans_cover_presets():
    names = {path.stem for path in SHIPPED}

    for preset in ("S", "M", "L", "XL"):
        assert f"ResEnc{preset}_2d" in names
        assert f"ResEnc{preset}_3d" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_shipped_plans_valid(path):
    plans = json.loads(path.read_text())

    validate_plans(plans)
    assert plans["plans_name"] == f"nnUNetPluginResEnc{path.stem[6:].split('_')[0]}Plans"
