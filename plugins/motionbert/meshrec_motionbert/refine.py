"""MotionBERT's refiner (branch ``refine`` of Walter0807/MotionBERT, ``lib/model/model_mesh_refine.py``).

It regresses residual 6D joint rotations on top of another method's per-frame SMPL poses
(HybrIK upstream), from the DSTformer features of the 2D keypoints and a temporal convolution
of the input poses; the betas are the input's.

``RefineHead`` (upstream names): per frame ``fc1`` (17 * 512 -> hidden) -> ``bn1`` -> ReLU; the
input poses (N, 144, T) through ``fc2`` (Conv1d, kernel 5, padding 2) -> ``bn2`` -> ReLU; both
concatenated -> ``head_pose`` (Conv1d 2 * hidden -> 144, kernel 5) + the input poses -> SPIN 6D ->
rotation matrices. Released: hidden 512, dropout 0.5 (training only).

The 6D layouts (see :mod:`meshrec.rotations`): upstream encodes the input rotations with
PyTorch3D's layout (rows 0 and 1) and decodes with SPIN's (columns 0 and 1, row by row), so a zero
residual does not return the input. ``layout="consistent"`` (the default) encodes with SPIN's
layout, so a zero residual returns the input exactly; ``layout="upstream"`` keeps upstream's
encoding, which its released checkpoint was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec.rotations import (
    matrix_from_6d_spin,
    matrix_to_6d_pytorch3d,
    matrix_to_6d_spin,
    matrix_to_axis_angle,
    rodrigues,
)
from meshrec_motionbert.checkpoint import DROPPED_PREFIXES
from meshrec_motionbert.model import NUM_SMPL_JOINTS, POSE_6D_SIZE, DSTformer, MeshRegressor

__all__ = ["LAYOUTS", "RefineHead", "RefinerNetwork", "is_refiner_state", "load_refiner_network"]

LAYOUTS = ("consistent", "upstream")


class RefineHead(nn.Module):
    """Residual pose head of the refiner (upstream ``SMPLRegressor`` of ``model_mesh_refine.py``)."""

    def __init__(self, dim_rep: int = 512, num_joints: int = 17, hidden_dim: int = 512, dropout_ratio: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout_ratio)
        self.fc1 = nn.Linear(num_joints * dim_rep, hidden_dim)
        self.fc2 = nn.Conv1d(POSE_6D_SIZE, hidden_dim, kernel_size=5, stride=1, padding=2)
        self.bn1 = nn.BatchNorm1d(hidden_dim, momentum=0.1)
        self.bn2 = nn.BatchNorm1d(hidden_dim, momentum=0.1)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.head_pose = nn.Conv1d(hidden_dim * 2, POSE_6D_SIZE, kernel_size=5, stride=1, padding=2)

    def forward(self, feat: torch.Tensor, init_pose: torch.Tensor) -> torch.Tensor:
        """features (N, T, J, C) and input poses (N, T, 144) in 6D -> refined poses (N, T, 144)
        (SPIN 6D). The residual is ``head_pose(...)``."""
        n, t = feat.shape[:2]
        feat = self.dropout(feat.reshape(n, t, -1))
        pose_feat = self.relu1(self.bn1(self.fc1(feat.reshape(n * t, -1))))  # (NT, hidden)
        init = init_pose.permute(0, 2, 1)  # (N, 144, T)
        pred_feat = self.relu2(self.bn2(self.fc2(init)))  # (N, hidden, T)
        joint = torch.cat([pose_feat.reshape(n, t, -1).permute(0, 2, 1), pred_feat], dim=1)
        return (self.head_pose(joint) + init).permute(0, 2, 1)


class RefinerNetwork(MeshRegressor):
    """DSTformer + :class:`RefineHead`: keypoints (N, T, 17, 3) and another method's rotations
    -> refined rotations. ``layout`` picks the input encoding (module docstring)."""

    def __init__(self, backbone: DSTformer | None = None, dim_rep: int = 512, num_joints: int = 17,
                 hidden_dim: int = 512, dropout_ratio: float = 0.5, layout: str = "consistent"):
        nn.Module.__init__(self)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.backbone = backbone if backbone is not None else DSTformer()
        self.feat_J = num_joints
        self.head = RefineHead(dim_rep, num_joints, hidden_dim, dropout_ratio)
        self.layout = layout
        self._body = None

    def encode(self, rotmat: torch.Tensor) -> torch.Tensor:
        """(..., 24, 3, 3) -> (..., 144) in the input layout."""
        sixd = matrix_to_6d_spin(rotmat) if self.layout == "consistent" else matrix_to_6d_pytorch3d(rotmat)
        return sixd.flatten(-2)

    def refine(self, x: torch.Tensor, rotmat: torch.Tensor) -> torch.Tensor:
        """keypoints (N, T, 17, 3), input rotations (N, T, 24, 3, 3) -> refined (N, T, 24, 3, 3)."""
        n, t = x.shape[:2]
        feat = self.backbone.get_representation(x).reshape(n, t, self.feat_J, -1)
        pose = self.head(feat, self.encode(rotmat))
        return matrix_from_6d_spin(pose.reshape(n, t, NUM_SMPL_JOINTS, 6))

    def forward(self, x: torch.Tensor, init_pose: torch.Tensor, init_shape: torch.Tensor) -> list[dict]:
        """Upstream's interface: ``init_pose`` (N, T, 72) axis-angle, ``init_shape`` (N, T, 10) ->
        ``[{"theta", "verts", "kp_3d"}]`` as :meth:`MeshRegressor.forward` (millimetres)."""
        n, t = x.shape[:2]
        rotmat = self.refine(x, rodrigues(init_pose.reshape(n, t, NUM_SMPL_JOINTS, 3)))
        rotmat, betas = rotmat.reshape(n * t, NUM_SMPL_JOINTS, 3, 3), init_shape.reshape(n * t, -1)
        vertices, joints = self.body(rotmat, betas)
        pose = matrix_to_axis_angle(rotmat).reshape(n * t, -1)
        return [{"theta": torch.cat([pose, betas], 1).reshape(n, t, -1), "verts": vertices.reshape(n, t, -1, 3),
                 "kp_3d": joints.reshape(n, t, -1, 3)}]


def is_refiner_state(state: Mapping[str, Any]) -> bool:
    """Whether a (prefix-free) state_dict is the refiner's (its ``head.fc2`` is a convolution)."""
    weight = state.get("head.fc2.weight")
    return weight is not None and getattr(weight, "dim", lambda: 0)() == 3


def load_refiner_network(path: str | Path, trust: bool = False, layout: str = "consistent", hidden_dim: int = 512,
                         checkpoint: Any = None, **architecture: Any) -> RefinerNetwork:
    """The refiner of ``checkpoint/mesh/FT_MB_release_MB_ft_pw3d_refine_hybrik/best_epoch.bin``
    (``train_mesh_refine.py``'s dict: ``model`` with ``module.`` prefix; ``head.smpl.*`` dropped),
    strictly loaded. ``checkpoint``: the file's content when already read."""
    checkpoint = load_checkpoint(path, trust=trust) if checkpoint is None else checkpoint
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} is not a MotionBERT checkpoint: expected a dict with a 'model' state_dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if not is_refiner_state(state):
        raise CheckpointError(f"{path} is not MotionBERT's refiner checkpoint (its head.fc2 is not a convolution); "
                              "the mesh checkpoint loads with meshrec.load_method('motionbert', checkpoint=...)")
    network = RefinerNetwork(DSTformer(**architecture) if architecture else None,
                             dim_rep=architecture.get("dim_rep", 512), hidden_dim=hidden_dim, layout=layout)
    load_state_dict_strict(network, {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}, str(path))
    return network
