"""Pure-PyTorch references of meshrec's custom ops, one module per op family.

Each function computes what the compiled kernel computes, with ordinary differentiable torch
operations: the test oracle for the kernels and the fallback when ``meshrec._C`` is not
available. They favour clarity over speed.
"""

from meshrec.ops.reference.rotation import rodrigues
from meshrec.ops.reference.smpl import forward_kinematics, joint_regression, smpl_lbs

__all__ = ["forward_kinematics", "joint_regression", "rodrigues", "smpl_lbs"]
