"""The HMR network with mmhuman3d's module and parameter names.

``HMRNetwork`` = ``backbone`` (ResNet-50, torchvision names, no fc) + ``head`` (mmhuman3d's
``HMRHead``): global average pooling, then three refinement steps from the mean parameters,
each a two-layer MLP with dropout and no activation between the layers (as SPIN and mmhuman3d
have it) predicting residuals of the pose (24 rotations in SPIN's 6D layout), 10 betas and the
weak-perspective crop camera (s, tx, ty).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from meshrec.nn import resnet50
from meshrec.rotations import matrix_from_6d_spin

__all__ = ["HMRHead", "HMRNetwork", "load_mean_params"]

NUM_JOINTS = 24
POSE_SIZE = NUM_JOINTS * 6  # SPIN's 6D layout, see meshrec.rotations
NUM_BETAS = 10
CAMERA_SIZE = 3


def load_mean_params(path: str | Path) -> dict[str, np.ndarray]:
    """SPIN's ``smpl_mean_params.npz``: ``pose`` (144,) in SPIN's 6D layout, ``shape`` (10,),
    ``cam`` (3,), as float32."""
    sizes = {"pose": POSE_SIZE, "shape": NUM_BETAS, "cam": CAMERA_SIZE}
    params = {}
    with np.load(Path(path), allow_pickle=False) as data:
        for key, size in sizes.items():
            value = np.asarray(data[key], dtype=np.float32).reshape(-1) if key in data.files else None
            if value is None or value.shape != (size,):
                raise ValueError(f"{path}: smpl_mean_params.npz needs {key!r} with {size} values")
            params[key] = value
    return params


class HMRHead(nn.Module):
    """Iterative regression of SMPL pose (6D), betas and crop camera from image features.

    Args:
        feature_channels: channels of the backbone's features (2048 for ResNet-50).
        hidden: width of the two fully connected layers.
        iterations: refinement steps (3 in HMR).
        mean_params: initial estimate ``{"pose": (144,), "shape": (10,), "cam": (3,)}``;
            zeros and (1, 0, 0) when None (a checkpoint overwrites these buffers).
    """

    def __init__(self, feature_channels: int = 2048, hidden: int = 1024, iterations: int = 3,
                 mean_params: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.iterations = iterations
        self.fc1 = nn.Linear(feature_channels + POSE_SIZE + NUM_BETAS + CAMERA_SIZE, hidden)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(hidden, POSE_SIZE)
        self.decshape = nn.Linear(hidden, NUM_BETAS)
        self.deccam = nn.Linear(hidden, CAMERA_SIZE)
        for layer in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
        if mean_params is None:
            mean_params = {"pose": np.zeros(POSE_SIZE), "shape": np.zeros(NUM_BETAS), "cam": np.array([1.0, 0.0, 0.0])}
        self.register_buffer("init_pose", torch.as_tensor(mean_params["pose"], dtype=torch.float32).view(1, POSE_SIZE))
        self.register_buffer("init_shape", torch.as_tensor(mean_params["shape"], dtype=torch.float32).view(1, NUM_BETAS))
        self.register_buffer("init_cam", torch.as_tensor(mean_params["cam"], dtype=torch.float32).view(1, CAMERA_SIZE))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, C, H, W) or (B, C) -> pose (B, 144) SPIN 6D, betas (B, 10), cam (B, 3)."""
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        batch = features.shape[0]
        pose = self.init_pose.expand(batch, -1)
        betas = self.init_shape.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        for _ in range(self.iterations):
            hidden = self.drop1(self.fc1(torch.cat([features, pose, betas, cam], dim=1)))
            hidden = self.drop2(self.fc2(hidden))
            pose = pose + self.decpose(hidden)
            betas = betas + self.decshape(hidden)
            cam = cam + self.deccam(hidden)
        return pose, betas, cam


class HMRNetwork(nn.Module):
    """Normalised crops (B, 3, 224, 224) -> ``{"rotmat": (B, 24, 3, 3), "betas": (B, 10),
    "cam": (B, 3)}``: SMPL joint rotations (root first), shape, and the weak-perspective crop
    camera (s, tx, ty)."""

    def __init__(self, mean_params: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.backbone = resnet50()
        self.head = HMRHead(self.backbone.out_channels, mean_params=mean_params)

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        pose, betas, cam = self.head(self.backbone(crops))
        rotmat = matrix_from_6d_spin(pose.view(-1, NUM_JOINTS, 6))
        return {"rotmat": rotmat, "betas": betas, "cam": cam}
