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

This is the SMPL module's path without the compiled library, and the oracle its kernels
(:func:`meshrec.ops.smpl_lbs`) are tested against through the module. It follows smplx's data
layout (dense skinning weights and joint regressor); :mod:`meshrec.ops.reference.smpl` is the
op-level reference on the kernels' layout, and both share :func:`forward_kinematics`.
"""

from __future__ import annotations

import torch

from meshrec.ops.reference.smpl import forward_kinematics

__all__ = ["forward_kinematics", "lbs"]


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
