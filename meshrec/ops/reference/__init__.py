"""Pure-PyTorch references of meshrec's custom ops, one module per op family.

Each function computes what the compiled kernel computes, with ordinary differentiable torch
operations: the test oracle for the kernels and the fallback when ``meshrec._C`` is not
available. They favour clarity over speed.
"""

from meshrec.ops.reference.metrics import nearest_points, procrustes, sample_sdf, winding_number
from meshrec.ops.reference.rotation import rodrigues
from meshrec.ops.reference.smpl import forward_kinematics, joint_regression, smpl_lbs

__all__ = [
    "forward_kinematics",
    "joint_regression",
    "nearest_points",
    "procrustes",
    "rodrigues",
    "sample_sdf",
    "smpl_lbs",
    "winding_number",
]
