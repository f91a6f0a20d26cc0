"""Linear blend skinning of the SMPL family in plain PyTorch (the reference implementation).

The maths is SMPL's (Loper et al. 2015) in the formulation smplx uses, so results agree with
``smplx.lbs.lbs`` to floating-point rounding:

1. shaped template   v_s = T + S beta
2. rest joints       J = R_J v_s                       (regressor applied to the shaped mesh)
3. pose feature      f = vec(R_1 - I, ..., R_{J-1} - I)   joint-major, row-major
4. posed template    v_p = v_s + P^T f
5. forward kinematics along the tree: G_j = G_parent(j) [R_j | J_j - J_parent(j)]
6. skinning          v = sum_j w_vj (G_j - G_j [J_j; 0]) [v_p; 1]

Joints returned are the posed kinematic joints (translation part of G_j), not a regressor applied
to the posed mesh.
"""

from __future__ import annotations

import torch

__all__ = ["forward_kinematics", "lbs"]


def forward_kinematics(
    rotations: torch.Tensor, rest_joints: torch.Tensor, parents: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global rigid transforms of the kinematic chain.

    Args:
        rotations: (B, J, 3, 3) local joint rotations.
        rest_joints: (B, J, 3) joint locations of the rest pose.
        parents: J parent indices, -1 for the root, each parent before its children.

    Returns:
        posed_joints (B, J, 3) and skinning transforms (B, J, 3, 4), the latter mapping rest
        positions to posed ones (the rest-joint offset is folded into the translation).
    """
    batch, num_joints = rotations.shape[:2]
    global_rotations = []
    global_translations = []
    for joint in range(num_joints):
        parent = parents[joint]
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


def lbs(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    j_regressor: torch.Tensor,
    parents: list[int],
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SMPL-family forward pass.

    Args:
        betas: (B, NB) shape coefficients.
        rotations: (B, J, 3, 3) joint rotations, root first.
        v_template: (V, 3) or (B, V, 3) template vertices in metres.
        shapedirs: (V, 3, NB) shape blend shapes.
        posedirs: ((J-1)*9, V*3) pose blend shapes (smplx's layout).
        j_regressor: (J, V) dense joint regressor.
        parents: J parent indices (-1 for the root).
        lbs_weights: (V, J) skinning weights.

    Returns:
        vertices (B, V, 3), posed joints (B, J, 3) and the shaped rest vertices (B, V, 3).
    """
    batch = betas.shape[0]
    v_shaped = v_template + torch.einsum("bl,vkl->bvk", betas, shapedirs)
    rest_joints = torch.einsum("jv,bvk->bjk", j_regressor, v_shaped)
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    num_joints, num_vertices = j_regressor.shape
    pose_feature = (rotations[:, 1:] - eye).reshape(batch, (num_joints - 1) * 9)
    v_posed = v_shaped + (pose_feature @ posedirs).view(batch, num_vertices, 3)
    posed_joints, transforms = forward_kinematics(rotations, rest_joints, parents)
    per_vertex = (lbs_weights @ transforms.reshape(batch, num_joints, 12)).view(batch, num_vertices, 3, 4)
    vertices = (per_vertex[..., :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + per_vertex[..., 3]
    return vertices, posed_joints, v_shaped
