"""DistributedDataParallel over two CPU processes (gloo): no unused parameters with or without deep supervision."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_resenc_plugin.networks import ResEncUNet

WORLD_SIZE = 2


def tiny_network(deep_supervision: bool) -> ResEncUNet:
    network = ResEncUNet(
        input_channels=1, num_classes=3, deep_supervision=deep_supervision, n_stages=3,
        features_per_stage=[4, 8, 8], conv_op="torch.nn.modules.conv.Conv2d", kernel_sizes=[[3, 3]] * 3,
        strides=[[1, 1], [2, 2], [2, 2]], n_blocks_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1],
    )
    network.apply(network.initialize)
    return network


def _worker(rank: int, store_file: str, deep_supervision: bool, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        network = tiny_network(deep_supervision)
        model = torch.nn.parallel.DistributedDataParallel(network, find_unused_parameters=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(1 + rank)
        losses = []
        # Two steps: DDP reports parameters without gradients when the second step starts its reduction.
        for _ in range(2):
            data = torch.randn(2, 1, 16, 16)
            target = torch.randint(0, 3, (2, 16, 16))
            optimizer.zero_grad()
            output = model(data)
            outputs = output if isinstance(output, (list, tuple)) else [output]
            loss = sum(torch.nn.functional.cross_entropy(
                item, torch.nn.functional.interpolate(target[:, None].float(), size=item.shape[2:])[:, 0].long())
                for item in outputs)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        flat = torch.cat([p.detach().flatten() for p in network.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(WORLD_SIZE)]
        dist.all_gather(gathered, flat)
        report = {
            "losses": losses,
            "num_outputs": len(outputs),
            "in_sync": all(torch.equal(gathered[0], item) for item in gathered),
        }
        if rank == 0:
            Path(result_file).write_text(json.dumps(report))
        # Without this barrier one rank can tear gloo down while the other still uses it, which aborts the
        # process ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("deep_supervision", [True, False], ids=["deep_supervision", "no_deep_supervision"])
def test_ddp_step_without_unused_parameters(tmp_path, deep_supervision):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build.")
    result_file = tmp_path / "result.json"

    mp.spawn(_worker, args=(str(tmp_path / "store"), deep_supervision, str(result_file)), nprocs=WORLD_SIZE,
             join=True)

    report = json.loads(result_file.read_text())
    # Three stages give two decoder outputs with deep supervision.
    assert report["num_outputs"] == (2 if deep_supervision else 1)
    assert report["in_sync"] is True
    assert all(math.isfinite(loss) for loss in report["losses"])


def test_switching_deep_supervision_keeps_state_dict_keys():
    network = tiny_network(deep_supervision=True)
    keys_on = list(network.state_dict())

    network.decoder.deep_supervision = False
    keys_off = list(network.state_dict())

    assert keys_on == keys_off
