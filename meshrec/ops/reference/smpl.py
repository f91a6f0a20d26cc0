"""Pure-PyTorch reference of the SMPL ops (torch only: loadable without meshrec's other modules).

The one pure-PyTorch SMPL: the oracle of the compiled kernels and the path of
:class:`meshrec.body.SMPL` when they are not in use. The maths is SMPL's (Loper et al. 2015) in
the formulation smplx uses, so results agree with ``smplx.lbs.lbs`` to rounding:

1. shaped template   v_s = T + S beta
2. rest joints       J = R_J v_s = R_J T + (R_J S) beta   (the regressor folded into the arrays)
3. pose feature      f = vec(R_1 - I, ..., R_{J-1} - I)   joint-major, row-major
4. posed template    v_p = v_s + P^T f
5. forward kinematics along the tree: G_j = G_parent(j) [R_j | J_j - J_parent(j)]
6. skinning          v = sum_j w_vj (G_j - G_j [J_j; 0]) [v_p; 1]

Joints returned are the posed kinematic joints (translation part of G_j), not a regressor applied
to the posed mesh, then those of an optional sparse regressor of the posed mesh.

``arrays`` and ``regressor`` are :class:`meshrec.ops.SMPLArrays` / :class:`meshrec.ops.SparseRegressor`
(or anything with the same attributes).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["check_index_values", "forward_kinematics", "joint_regression", "smpl_lbs"]


def check_index_values(index: torch.Tensor, limit: int, name: str, what: str, ascending: bool = False) -> None:
    """Raises IndexError unless every value of ``index`` lies in [0, limit) (and, with ``ascending``,
    never decreases), as the compiled ops' checks do (csrc/smpl/smpl_binding.h).

    Without it torch's indexing would wrap negative ids around (picking the last vertex) instead
    of refusing them, and the compiled and reference backends would disagree.
    """
    flat = index.reshape(-1)
    if flat.numel() == 0:
        return
    bad = (flat < 0) | (flat >= limit)
    if bool(bad.any()):
        position = int(bad.nonzero()[0, 0])
        raise IndexError(f"meshrec: {name} holds {int(flat[position])} at flat position {position}, out of range: "
                         f"{what} must lie in [0, {limit})")
    if ascending and flat.numel() > 1:
        falls = flat[1:] < flat[:-1]
        if bool(falls.any()):
            position = int(falls.nonzero()[0, 0]) + 1
            raise IndexError(f"meshrec: {name} must be ascending (sorted by vertex, as SparseRegressor builds them), "
                             f"but position {position} holds {int(flat[position])} after {int(flat[position - 1])}")


def _check_regressor(regressor: Any, num_vertices: int) -> None:
    check_index_values(regressor.vertex_ids, num_vertices, "regressor vertex ids", "vertex ids (the mesh's vertices)",
                       ascending=True)
    check_index_values(regressor.rows, regressor.num_rows, "regressor rows", "rows (the regressed joints)")


def forward_kinematics(
    rotations: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global rigid transforms of a kinematic tree.

    Args:
        rotations: (B, J, 3, 3) local joint rotations.
        rest_joints: (B, J, 3) joint locations of the rest pose.
        parents: J parent indices, -1 for the root, each parent before its children.

    Returns:
        posed_joints (B, J, 3) and skinning transforms (B, J, 3, 4), the latter mapping rest
        positions to posed ones (the rest-joint offset is folded into the translation).
    """
    global_rotations: list[torch.Tensor] = []
    global_translations: list[torch.Tensor] = []
    for joint, parent in enumerate(parents):
        if parent < 0:
            global_rotations.append(rotations[:, joint])
            global_translations.append(rest_joints[:, joint])
        else:
            offset = (rest_joints[:, joint] - rest_joints[:, parent]).unsqueeze(-1)
            parent_rotation = global_rotations[parent]
            global_rotations.append(parent_rotation @ rotations[:, joint])
            global_translations.append((parent_rotation @ offset).squeeze(-1) + global_translations[parent])
    rotation = torch.stack(global_rotations, dim=1)
    posed_joints = torch.stack(global_translations, dim=1)
    translation = posed_joints - (rotation @ rest_joints.unsqueeze(-1)).squeeze(-1)
    return posed_joints, torch.cat([rotation, translation.unsqueeze(-1)], dim=-1)


def joint_regression(vertices: torch.Tensor, regressor: Any) -> torch.Tensor:
    """(B, V, 3) vertices -> (B, R, 3) joints; see ``meshrec.ops.joint_regression``."""
    _check_regressor(regressor, vertices.shape[1])
    return _regress(vertices, regressor)


def _regress(vertices: torch.Tensor, regressor: Any) -> torch.Tensor:
    """:func:`joint_regression` with the regressor's indices already checked."""
    rows = regressor.rows.long()
    picked = vertices[:, regressor.vertex_ids.long()] * regressor.weights[:, None]
    joints = vertices.new_zeros(vertices.shape[0], regressor.num_rows, 3)
    return joints.index_add(1, rows, picked)


def smpl_lbs(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    arrays: Any,
    transl: torch.Tensor | None = None,
    vertex_template: torch.Tensor | None = None,
    joint_template: torch.Tensor | None = None,
    regressor: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL-family forward pass; see ``meshrec.ops.smpl_lbs``."""
    batch = betas.shape[0]
    num_vertices = arrays.v_template.shape[0]
    num_joints = len(arrays.parents)
    check_index_values(arrays.skin_joints, num_joints, "skin_joints", "skinning joints (the model's joints)")
    if regressor is not None:
        _check_regressor(regressor, num_vertices)
    template = arrays.v_template if vertex_template is None else vertex_template
    rest_template = arrays.joint_template if joint_template is None else joint_template
    v_shaped = template + (betas @ arrays.shapedirs).view(batch, num_vertices, 3)
    rest_joints = rest_template + (betas @ arrays.joint_shapedirs).view(batch, num_joints, 3)
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    pose_feature = (rotations[:, 1:] - eye).reshape(batch, 9 * (num_joints - 1))
    v_posed = v_shaped + (pose_feature @ arrays.posedirs).view(batch, num_vertices, 3)
    posed_joints, transforms = forward_kinematics(rotations, rest_joints.expand(batch, -1, -1), arrays.parents)
    weights = torch.zeros(num_vertices, num_joints, dtype=betas.dtype, device=betas.device)
    weights.scatter_add_(1, arrays.skin_joints.long(), arrays.skin_weights)
    per_vertex = (weights @ transforms.reshape(batch, num_joints, 12)).view(batch, num_vertices, 3, 4)
    vertices = (per_vertex[..., :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + per_vertex[..., 3]
    if transl is not None:
        vertices = vertices + transl[:, None]
        posed_joints = posed_joints + transl[:, None]
    if regressor is not None and regressor.num_rows > 0:
        posed_joints = torch.cat([posed_joints, _regress(vertices, regressor)], dim=1)  # checked above
    return vertices, posed_joints
