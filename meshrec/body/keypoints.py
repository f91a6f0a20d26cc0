"""2D keypoint layouts (COCO-17, OpenPose BODY-25, Human3.6M-17) and where each keypoint comes
from on the SMPL body.

A layout names its keypoints in order and, for each, the body point it observes: one of the 45
joints :class:`meshrec.body.SMPL` returns (24 kinematic joints, then smplx's 21 vertex joints),
or, for Human3.6M's layout, a joint of the H36M regressor applied to the posed mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from meshrec.body.constants import SMPL_OUTPUT_JOINT_NAMES
from meshrec.body.regressor import JointRegressor
from meshrec.ops import joint_regression

__all__ = ["LAYOUTS", "KeypointLayout", "KeypointModel", "get_layout"]


@dataclass(frozen=True)
class KeypointLayout:
    """A 2D keypoint layout.

    Attributes:
        name: key in :data:`LAYOUTS`.
        keypoints: the keypoint names, in the layout's order.
        sources: per keypoint, the SMPL output joint it observes, or ``"h36m:<index>"``.
        torso: names of the keypoints used to place the body first (shoulders and hips).
    """

    name: str
    keypoints: tuple[str, ...]
    sources: tuple[str, ...]
    torso: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def torso_indices(self) -> list[int]:
        return [self.keypoints.index(name) for name in self.torso]

    @property
    def uses_h36m_regressor(self) -> bool:
        return any(source.startswith("h36m:") for source in self.sources)


_COCO = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
         "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
         "right_knee", "left_ankle", "right_ankle")
_OPENPOSE = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
             "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
             "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
             "left_heel", "right_big_toe", "right_small_toe", "right_heel")
_H36M = ("pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle", "spine",
         "thorax", "head", "head_top", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
         "right_elbow", "right_wrist")
# Keypoints named differently from the SMPL joint they observe.
_SMPL_SOURCE = {"neck": "neck", "mid_hip": "pelvis"}

LAYOUTS: dict[str, KeypointLayout] = {
    "coco17": KeypointLayout("coco17", _COCO, tuple(_SMPL_SOURCE.get(n, n) for n in _COCO),
                             ("left_shoulder", "right_shoulder", "left_hip", "right_hip")),
    "openpose25": KeypointLayout("openpose25", _OPENPOSE, tuple(_SMPL_SOURCE.get(n, n) for n in _OPENPOSE),
                                 ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "neck", "mid_hip")),
    # mmhuman3d's H36M order (joint 1 is the left hip), regressed from the posed mesh
    "h36m17": KeypointLayout("h36m17", _H36M, tuple(f"h36m:{i}" for i in range(17)),
                             ("left_shoulder", "right_shoulder", "left_hip", "right_hip")),
}


def get_layout(name: str) -> KeypointLayout:
    if name not in LAYOUTS:
        counts = ", ".join(f"{key} ({len(value)} keypoints)" for key, value in LAYOUTS.items())
        raise ValueError(f"unknown keypoint layout {name!r}; known layouts: {counts}")
    return LAYOUTS[name]


class KeypointModel(nn.Module):
    """Maps a body model's output to the 3D points a layout observes.

    Args:
        layout: the keypoint layout.
        h36m_regressor: the (17, V) H36M regressor, needed by layouts observing H36M joints: a
            :class:`meshrec.body.JointRegressor` (e.g. ``JointRegressor.from_file("J_regressor_h36m.npy")``)
            or the dense matrix (array or tensor), applied sparsely either way.
    """

    def __init__(self, layout: KeypointLayout, h36m_regressor: JointRegressor | Any = None):
        super().__init__()
        self.layout = layout
        self.h36m_regressor: JointRegressor | None = None
        if layout.uses_h36m_regressor:
            if h36m_regressor is None:
                raise ValueError(f"layout {layout.name!r} needs the H36M joint regressor (J_regressor_h36m.npy)")
            if not isinstance(h36m_regressor, JointRegressor):
                h36m_regressor = JointRegressor(h36m_regressor)
            self.h36m_regressor = h36m_regressor
            self.register_buffer("indices", torch.tensor([int(s.split(":")[1]) for s in layout.sources]))
            sparse = h36m_regressor.sparse()
            self._support = sparse.support()
            self._support_ids = tuple(self._support.tolist())  # one tuple: a fit passes it on every call
            self._support_regressor = sparse.select_vertices(self._support)
        else:
            self.register_buffer("indices", torch.tensor([SMPL_OUTPUT_JOINT_NAMES.index(s) for s in layout.sources]))

    @property
    def vertex_ids(self) -> tuple[int, ...] | None:
        """The vertices the keypoints read, ascending (the H36M regressor's support), or None when
        they are joints only. A body model called with ``vertex_ids=`` these (the joints-only
        path) gives ``vertices`` that :meth:`forward` accepts in place of the full mesh."""
        if self.h36m_regressor is None:
            return None
        return self._support_ids

    def forward(self, vertices: torch.Tensor | None, joints: torch.Tensor) -> torch.Tensor:
        """vertices (B, V, 3) or only those of :attr:`vertex_ids` (B, n, 3), or None when
        :attr:`vertex_ids` is None; joints (B, 45, 3) -> keypoints (B, K, 3) in the same frame."""
        if self.h36m_regressor is not None:
            if vertices is None:
                raise ValueError(f"layout {self.layout.name!r} reads vertices (the H36M regressor); pass the mesh "
                                 "or the vertices of KeypointModel.vertex_ids")
            regressor = self.h36m_regressor.sparse()
            if vertices.dim() == 3 and vertices.shape[1] == len(self._support) != regressor.num_vertices:
                regressor = self._support_regressor
            # The regressor follows the vertices' dtype (a fit may run in float64): its few
            # hundred non-zero weights are converted, not the mesh.
            regressed = joint_regression(vertices, regressor.to(device=vertices.device, dtype=vertices.dtype))
            return regressed.index_select(1, self.indices)
        return joints.index_select(1, self.indices)
