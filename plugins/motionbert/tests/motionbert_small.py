"""A small MotionBERT network (same code, small sizes) and a method around it, for fast tests."""

from __future__ import annotations

import torch

from meshrec.body import SMPL, JointRegressor, load_joint_regressor
from meshrec_motionbert.method import MotionBERT
from meshrec_motionbert.model import DSTformer, MeshRegressor

SMALL = dict(dim_feat=16, dim_rep=16, depth=2, num_heads=2, mlp_ratio=2, maxlen=24)


def small_network(seed: int = 0, dtype: torch.dtype = torch.float64) -> MeshRegressor:
    """Random weights everywhere (fusion weights and BatchNorm statistics too), eval mode."""
    torch.manual_seed(seed)
    network = MeshRegressor(DSTformer(**SMALL), dim_rep=16, hidden_dim=8)
    with torch.no_grad():
        for name, value in network.named_parameters():
            if name.endswith("weight") and value.dim() == 2:
                value.copy_(torch.randn_like(value) / value.shape[1] ** 0.5)
            else:
                value.copy_(0.3 * torch.randn_like(value))
        for bn in (network.head.bn1, network.head.bn2):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
        network.head.init_pose.add_(0.1 * torch.randn_like(network.head.init_pose))
    return network.to(dtype).eval()


def body(folder, dtype: torch.dtype = torch.float64) -> tuple[SMPL, JointRegressor]:
    smpl = SMPL(folder, dtype=dtype, create_transl=False)
    return smpl, JointRegressor(load_joint_regressor("J_regressor_h36m_correct.npy", folder), dtype=dtype)


def small_method(folder, seed: int = 0, dtype: torch.dtype = torch.float64, **options) -> MotionBERT:
    """A :class:`MotionBERT` method on :func:`small_network` (what ``build`` makes, minus the file)."""
    smpl, regressor = body(folder, dtype)
    network = small_network(seed, dtype).set_body_model(smpl, regressor)
    method = MotionBERT(network, smpl, torch.device("cpu"), **MotionBERT.resolve_options(options))
    method.h36m_regressor = regressor
    return method


def small_refiner(folder, seed: int = 0, layout: str = "consistent", zero_residual: bool = False,
                  dtype: torch.dtype = torch.float64, **options) -> MotionBERT:
    """A :class:`MotionBERT` method holding a small refiner network (random weights)."""
    from meshrec_motionbert.refine import RefinerNetwork

    torch.manual_seed(seed)
    network = RefinerNetwork(DSTformer(**SMALL), dim_rep=16, hidden_dim=8, layout=layout)
    with torch.no_grad():
        for name, value in network.named_parameters():
            value.copy_(torch.randn_like(value) / (value[0].numel() ** 0.5 if value.dim() > 1 else 3))
        for bn in (network.head.bn1, network.head.bn2):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
        if zero_residual:
            network.head.head_pose.weight.zero_()
            network.head.head_pose.bias.zero_()
    smpl, regressor = body(folder, dtype)
    network = network.to(dtype).eval().set_body_model(smpl, regressor)
    options.setdefault("window_overlap", 2)
    options.setdefault("clip_len", 24)
    method = MotionBERT(network, smpl, torch.device("cpu"), **MotionBERT.resolve_options({"refine_layout": layout,
                                                                                         **options}))
    method.h36m_regressor = regressor
    return method
