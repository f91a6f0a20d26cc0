"""SA-HMR throughput at the released size (two HRNet-W64, SPVCNN, METRO-enhanced; random weights in
the released layout), batch 1, a 20k-point scene crop around the root, and the split between
RCNet's HRNet, the scene branch (crop, 5 cm voxels, features, SPVCNN, vote) and module 2 (second
HRNet-W64 + transformers + upsampling)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("meshrec_sahmr")

CROP_POINTS = 20_000


@pytest.fixture(scope="module")
def setup():
    from meshrec_sahmr.model import SAHMRNetwork

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    network = SAHMRNetwork().to(device).eval()
    with torch.no_grad():  # a root about 2.5 m in front of the camera, whatever the random weights
        network.rcnet.root_net.out_conv.weight[1] = 0.0
        network.rcnet.root_net.out_conv.bias[1] = 1.0
    pids = torch.randint(1, 8, (431,))
    network.metro_enhanced.set_template(torch.randn(14, 3) * 0.3, torch.randn(431, 3) * 0.3, pids)
    image = torch.rand(1, 3, 224, 224, device=device)
    box = torch.tensor([[200.0, 100.0, 400.0, 300.0]], device=device)
    K = torch.tensor([[[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]], device=device)
    with torch.inference_mode():
        root = network.rcnet(image, box, K, [torch.zeros(1, 3, device=device) + 2.0]).pred_c_pelvis[0, 0]
    # CROP_POINTS points within 1.2 m of the root: all of them survive the 1.25 m crop
    direction = torch.nn.functional.normalize(torch.randn(CROP_POINTS, 3), dim=1)
    radius = 1.2 * torch.rand(CROP_POINTS, 1) ** (1 / 3)
    points = (root.cpu() + direction * radius).to(device)
    return network, image, box, K, points


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.mark.benchmark(group="sahmr")
def test_sahmr_batch1_20k_point_crop(timed, setup):
    network, image, box, K, points = setup

    def run():
        with torch.inference_mode():
            return network(image, box, K, [points], generator=torch.Generator().manual_seed(0))

    out = timed(run, rounds=2)
    assert out.pred_c_verts.shape == (1, 6890, 3) and len(out.rcnet.c_pcFst_nearby[0]) == CROP_POINTS
    assert not bool(out.rcnet.crop_fell_back[0])


@pytest.mark.benchmark(group="sahmr-split")
@pytest.mark.parametrize("part", ["rcnet-hrnet", "scene", "metro"])
def test_sahmr_split(timed, setup, part):
    network, image, box, K, points = setup
    with torch.inference_mode():
        maps = network.rcnet.image_branch(image)
        rc = network.rcnet(image, box, K, [points], root_net_out=maps)

    def run():
        with torch.inference_mode():
            if part == "rcnet-hrnet":
                return network.rcnet.image_branch(image)
            if part == "scene":
                return network.rcnet(image, box, K, [points], root_net_out=maps)
            return network.mesh_from_root(image, rc, torch.Generator().manual_seed(0))

    out = timed(run, rounds=2)
    if part == "rcnet-hrnet":
        assert out.shape == (1, 41, 56, 56)
    elif part == "scene":
        assert len(out.voxel_coords) > 1000 and out.pred_c_pelvis_refined.shape == (1, 1, 3)
    else:
        assert out.pred_c_verts.shape == (1, 6890, 3)
