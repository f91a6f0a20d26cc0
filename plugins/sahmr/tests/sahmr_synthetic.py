"""Synthetic SA-HMR files for the tests: small networks in the released checkpoint layout,
support files in the upstream formats, scenes. Written by the project; no upstream data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from meshrec.nn.hrnet import HRNet
from meshrec.scene import SPVCNN
from meshrec_sahmr.metro import METROEnhanced
from meshrec_sahmr.model import SAHMRNetwork
from meshrec_sahmr.rcnet import RCNet, RootNet


def tiny_network(seed: int = 0, rounding: str = "trunc") -> SAHMRNetwork:
    """SA-HMR's architecture with small widths (same key names, 445 tokens, 6890 output vertices)."""
    torch.manual_seed(seed)
    rcnet = RCNet(RootNet(HRNet(width=4, num_modules=(1, 1, 1), num_blocks=1, head=False, stem_channels=8)),
                  SPVCNN(35, 12, channel_ratio=0.25, rounding=rounding))
    backbone = HRNet(width=4, num_modules=(1, 1, 1), num_blocks=1, head=True, head_channels=(2, 4, 8, 16),
                     final_channels=16, num_classes=5, stem_channels=8)
    metro = METROEnhanced(backbone, feature_dims=(19, 8, 8), hidden_dims=(8, 8, 8), image_channels=16, num_coarse=16,
                          heads=4, layers=1, intermediate=16, vocab_size=10, max_positions=512, type_vocab_size=2)
    network = SAHMRNetwork(rcnet, metro)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
        for name, parameter in network.named_parameters():
            if name.endswith("kernel"):
                fan = parameter.shape[0] * parameter.shape[1] if parameter.dim() == 3 else parameter.shape[0]
                parameter.normal_(0, fan ** -0.5, generator=generator)
        # A root depth map that puts people ~2.5 m in front of the camera.
        network.rcnet.root_net.out_conv.weight[1] *= 1e-3
        network.rcnet.root_net.out_conv.bias[1] = 1.0
    # A random template (the method replaces it with the one built from SMPL and the support files).
    pids = torch.randint(0, 8, (431,), generator=generator)
    pids[:7] = torch.arange(1, 8)
    network.metro_enhanced.set_template(torch.randn(14, 3, generator=generator) * 0.3,
                                        torch.randn(431, 3, generator=generator) * 0.3, pids)
    return network.eval()


def released_layout(network: SAHMRNetwork) -> dict:
    """The layout of sahmr_rich_e30.pth: {"network": {"net.<key>": tensor}, "epoch": 30}."""
    return {"network": {"net." + key: value.clone() for key, value in network.state_dict().items()}, "epoch": 30}


def write_support(folder: Path, seed: int = 0) -> Path:
    """mesh_downsampling.npz (object arrays of scipy csc matrices, as GraphCMR's) and
    seg_part_info.npy (a pickled dict, as SA-HMR's) with random selections and parts."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def selection(rows: int, cols: int):
        chosen = rng.choice(cols, rows, replace=False)
        return scipy.sparse.csc_matrix((np.ones(rows), (np.arange(rows), chosen)), shape=(rows, cols))

    D = np.empty(2, dtype=object)
    D[0], D[1] = selection(1723, 6890), selection(431, 1723)
    np.savez(folder / "mesh_downsampling.npz", D=D, F=np.empty(0))
    pids = rng.integers(0, 8, 431).astype(np.float64)
    pids[:7] = np.arange(1, 8)
    np.save(folder / "seg_part_info.npy", {"verts431_pids": pids, "verts6890_pids": rng.integers(0, 8, 6890) * 1.0,
                                           "predefined_segparts": ["default", "L_Leg", "R_Leg", "L_Hand", "R_Hand",
                                                                   "back", "gluteus", "thighs"]}, allow_pickle=True)
    return folder


def scene_points(seed: int = 0, count: int = 20000) -> np.ndarray:
    """A room-like cloud in the camera frame, metres: floor at y = 1 m, a back wall at z = 5 m and
    scattered points between (x in [-2, 2], many negative coordinates)."""
    rng = np.random.default_rng(seed)
    n = count // 3
    floor = np.stack([rng.uniform(-2, 2, n), np.full(n, 1.0), rng.uniform(1, 5, n)], 1)
    wall = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1, n), np.full(n, 5.0)], 1)
    inside = np.stack([rng.uniform(-2, 2, n), rng.uniform(-1.5, 1, n), rng.uniform(1, 5, n)], 1)
    return np.concatenate([floor, wall, inside]).astype(np.float32)
