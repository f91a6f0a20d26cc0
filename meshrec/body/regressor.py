"""Joint regressors applied to posed meshes: H36M's 17 joints, mmhuman3d's 9 extra joints, ...

>>> h36m = JointRegressor.from_file("J_regressor_h36m.npy")   # searched like the body models
>>> joints = h36m(smpl(betas=betas, body_pose=pose, global_orient=orient).vertices)  # (B, 17, 3)

The regressor files are dense (J', V) arrays that are mostly zeros; this module keeps only the
non-zero entries and applies them with :func:`meshrec.ops.joint_regression` (O(B nnz) instead
of the dense O(B J' V)), differentiably.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from meshrec.body.files import PathLike, load_joint_regressor
from meshrec.ops import SparseRegressor, joint_regression

__all__ = ["JointRegressor"]


class JointRegressor(nn.Module):
    """Joints as fixed linear combinations of mesh vertices: (B, V, 3) -> (B, J', 3).

    Args:
        matrix: the (J', V) regressor: array, tensor or scipy sparse matrix.
        dtype: dtype of the weights (and of the vertices it accepts); follows ``.to()``.

    The regressor is stored as buffers that stay out of the state dict (the files are data that
    come with licensed body models): rebuild the module from the file instead of saving it.
    """

    def __init__(self, matrix: Any, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        sparse = SparseRegressor.from_dense(matrix, dtype=dtype)
        self.num_joints = sparse.num_rows
        self.num_vertices = sparse.num_vertices
        self.register_buffer("vertex_ids", sparse.vertex_ids, persistent=False)
        self.register_buffer("rows", sparse.rows, persistent=False)
        self.register_buffer("weights", sparse.weights, persistent=False)

    @classmethod
    def from_file(cls, name: PathLike, location: PathLike | None = None,
                  dtype: torch.dtype = torch.float32) -> JointRegressor:
        """Loads e.g. ``J_regressor_h36m.npy`` from ``location`` or the body-model search path
        (:func:`meshrec.body.load_joint_regressor`)."""
        return cls(load_joint_regressor(str(name), location), dtype=dtype)

    def sparse(self) -> SparseRegressor:
        """The regressor as the op's :class:`meshrec.ops.SparseRegressor`."""
        return SparseRegressor(self.vertex_ids, self.rows, self.weights, self.num_joints, self.num_vertices)

    def to_dense(self) -> torch.Tensor:
        """The (J', V) matrix."""
        return self.sparse().to_dense()

    def forward(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) vertices -> (B, J', 3) joints, same dtype and device as the module."""
        return joint_regression(vertices, self.sparse())

    def extra_repr(self) -> str:
        return f"joints={self.num_joints}, vertices={self.num_vertices}, nonzeros={self.weights.numel()}"
