"""Fine-tuning: loading plugin and stock ResEnc checkpoints, whole or encoder only, with readable errors."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnunet_resenc_plugin.cli import main as cli_main
from nnunet_resenc_plugin.errors import CheckpointConversionError
from nnunet_resenc_plugin.networks import ResEncUNet
from nnunet_resenc_plugin.training.pretrained import load_pretrained

STAGES = 3
COMMON = dict(n_stages=STAGES, features_per_stage=[4, 8, 16], conv_op=torch.nn.Conv2d,
              kernel_sizes=[[3, 3]] * STAGES, strides=[[1, 1], [2, 2], [2, 2]], n_blocks_per_stage=[1, 2, 2],
              conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
              nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def plugin_net(num_classes: int = 3, decoder_convs: int = 1, seed: int = 0) -> ResEncUNet:
    torch.manual_seed(seed)
    network = ResEncUNet(input_channels=1, num_classes=num_classes,
                         n_conv_per_stage_decoder=[decoder_convs] * (STAGES - 1), **COMMON)
    network.apply(network.initialize)
    # Randomise the norms too, so that a load that skips them shows up in the comparison.
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return network


def save_checkpoint(path, state_dict) -> None:
    torch.save({"network_weights": state_dict, "trainer_name": "nnUNetTrainer"}, path)


def test_plugin_checkpoint_skips_seg_layers(tmp_path):
    source, target = plugin_net(seed=1), plugin_net(seed=2)
    save_checkpoint(tmp_path / "plugin.pth", source.state_dict())

    loaded = load_pretrained(target, tmp_path / "plugin.pth")

    assert loaded
    assert not [key for key in loaded if key.startswith("decoder.seg_layers.")]
    for key in loaded:
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key
    seg_layer = next(key for key in target.state_dict() if key.startswith("decoder.seg_layers."))
    assert not torch.equal(target.state_dict()[seg_layer], source.state_dict()[seg_layer])


def test_other_class_count_loads(tmp_path):
    save_checkpoint(tmp_path / "plugin.pth", plugin_net(num_classes=3).state_dict())

    loaded = load_pretrained(plugin_net(num_classes=5), tmp_path / "plugin.pth")

    assert any(key.startswith("decoder.") for key in loaded)


def test_nnunet_loader_accepts_other_class_count(tmp_path):
    # nnU-Net's -pretrained_weights loader skips only keys that contain ".seg_layers.".
    source, target = plugin_net(num_classes=3, seed=1), plugin_net(num_classes=5, seed=2)
    save_checkpoint(tmp_path / "plugin.pth", source.state_dict())
    initial = {key: tensor.clone() for key, tensor in target.state_dict().items()}

    load_pretrained_weights(target, str(tmp_path / "plugin.pth"))

    output_keys = [key for key in initial if ".seg_layers." in key]
    assert len(output_keys) == 2 * (STAGES - 1)
    for key in output_keys:
        assert torch.equal(target.state_dict()[key], initial[key]), key
    for key in [key for key in initial if key not in output_keys]:
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key


def test_legacy_heads_checkpoint_loads(tmp_path):
    source, target = plugin_net(seed=1), plugin_net(seed=2)
    legacy = {key.replace("decoder.seg_layers.", "decoder.heads."): tensor
              for key, tensor in source.state_dict().items()}
    save_checkpoint(tmp_path / "legacy.pth", legacy)

    loaded = load_pretrained(target, tmp_path / "legacy.pth")

    expected = [key for key in source.state_dict() if not key.startswith("decoder.seg_layers.")]
    assert loaded == sorted(expected)
    for key in expected:
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key


def test_decoder_mismatch_reports_shapes_per_key(tmp_path):
    save_checkpoint(tmp_path / "plugin.pth", plugin_net(decoder_convs=1).state_dict())

    with pytest.raises(CheckpointConversionError) as error:
        load_pretrained(plugin_net(decoder_convs=2), tmp_path / "plugin.pth")

    message = str(error.value)
    assert "missing in checkpoint, network (" in message
    assert "decoder.stages." in message
    assert "tensor(" not in message
    assert "nnUNet_resenc_pretrained_encoder_only=1" in message


def test_encoder_only_ignores_decoder(tmp_path):
    source = plugin_net(decoder_convs=1, seed=1)
    target = plugin_net(decoder_convs=2, seed=2)
    save_checkpoint(tmp_path / "plugin.pth", source.state_dict())

    loaded = load_pretrained(target, tmp_path / "plugin.pth", encoder_only=True)

    assert loaded and all(key.startswith("encoder.") for key in loaded)
    encoder_keys = [key for key in target.state_dict() if key.startswith("encoder.")]
    assert sorted(loaded) == sorted(encoder_keys)
    for key in encoder_keys:
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key


def test_encoder_shape_mismatch_names_both_shapes(tmp_path):
    wider = ResEncUNet(input_channels=2, num_classes=3, n_conv_per_stage_decoder=[1] * (STAGES - 1), **COMMON)
    save_checkpoint(tmp_path / "wide.pth", wider.state_dict())

    with pytest.raises(CheckpointConversionError, match=r"checkpoint \(4, 2, 3, 3\), network \(4, 1, 3, 3\)"):
        load_pretrained(plugin_net(), tmp_path / "wide.pth", encoder_only=True)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointConversionError, match="not found"):
        load_pretrained(plugin_net(), tmp_path / "absent.pth")


def stock_net(seed: int = 3) -> ResidualEncoderUNet:
    torch.manual_seed(seed)
    network = ResidualEncoderUNet(input_channels=1, num_classes=3, n_conv_per_stage_decoder=[1] * (STAGES - 1),
                                  deep_supervision=False, **COMMON)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return network.eval()


def test_stock_checkpoint_gives_same_features(tmp_path):
    stock = stock_net()
    save_checkpoint(tmp_path / "stock.pth", stock.state_dict())
    target = plugin_net(seed=4).eval()

    loaded = load_pretrained(target, tmp_path / "stock.pth")

    assert loaded
    # Segmentation layers are never loaded, so copy the full-resolution one to compare the whole function.
    target.decoder.seg_layers[-1].load_state_dict(stock.decoder.seg_layers[-1].state_dict())
    data = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(target(data), stock(data), atol=1e-5)


def test_convert_checkpoint_command(tmp_path):
    stock = stock_net()
    save_checkpoint(tmp_path / "stock.pth", stock.state_dict())

    code = cli_main(["convert-checkpoint", str(tmp_path / "stock.pth"), str(tmp_path / "plugin.pth")])

    assert code == 0
    checkpoint = torch.load(tmp_path / "plugin.pth", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    target = plugin_net(seed=5)
    target.load_state_dict(checkpoint["network_weights"])
    stem = stock.state_dict()["encoder.stem.convs.0.conv.weight"]
    assert torch.equal(target.state_dict()["encoder.stem.conv.weight"], stem)


def test_convert_checkpoint_refuses_existing_output(tmp_path):
    save_checkpoint(tmp_path / "stock.pth", stock_net().state_dict())
    (tmp_path / "plugin.pth").write_bytes(b"")

    code = cli_main(["convert-checkpoint", str(tmp_path / "stock.pth"), str(tmp_path / "plugin.pth")])

    assert code == 2


@pytest.mark.parametrize("key_name", ["seg_layers", "heads"])
def test_convert_plugin_checkpoint_to_stock(tmp_path, key_name):
    # "heads" is the segmentation-layer name of older plugin checkpoints.
    source = plugin_net(seed=6)
    weights = {key.replace("decoder.seg_layers.", f"decoder.{key_name}."): tensor
               for key, tensor in source.state_dict().items()}
    save_checkpoint(tmp_path / "plugin.pth", weights)

    code = cli_main(["convert-checkpoint", str(tmp_path / "plugin.pth"), str(tmp_path / "stock.pth"),
                     "--to", "stock"])

    assert code == 0
    stock = stock_net()
    stock.load_state_dict(torch.load(tmp_path / "stock.pth", weights_only=False)["network_weights"])
    output_weight = source.state_dict()["decoder.seg_layers.1.weight"]
    assert torch.equal(stock.state_dict()["decoder.seg_layers.1.weight"], output_weight)
