"""The SMPL family: file loading without chumpy, and SMPL / SMPL-H as torch modules.

>>> from meshrec.body import SMPL
>>> smpl = SMPL("path/to/models", gender="neutral")       # or SMPL() with MESHREC_BODY_MODELS set
>>> out = smpl(betas=betas, body_pose=body_pose, global_orient=global_orient)
>>> out.vertices.shape, out.joints.shape                  # (B, 6890, 3), (B, 45, 3)
>>> h36m = JointRegressor.from_file("J_regressor_h36m.npy")
>>> h36m(out.vertices).shape                              # (B, 17, 3)
"""

from meshrec.body.constants import (
    SMPL_JOINT_NAMES,
    SMPL_OUTPUT_JOINT_NAMES,
    SMPL_VERTEX_JOINTS,
    SMPLH_JOINT_NAMES,
)
from meshrec.body.files import (
    body_model_search_dirs,
    find_body_model_file,
    load_body_model_arrays,
    load_joint_regressor,
)
from meshrec.body.keypoints import LAYOUTS as KEYPOINT_LAYOUTS
from meshrec.body.keypoints import KeypointLayout, KeypointModel, get_layout
from meshrec.body.regressor import JointRegressor
from meshrec.body.smpl import SMPL, SMPLH, SMPLHOutput, SMPLOutput
from meshrec.errors import BodyModelNotFoundError

__all__ = [
    "KEYPOINT_LAYOUTS",
    "KeypointLayout",
    "KeypointModel",
    "get_layout",
    "JointRegressor",
    "SMPL",
    "SMPLH",
    "SMPLHOutput",
    "SMPLOutput",
    "SMPL_JOINT_NAMES",
    "SMPL_OUTPUT_JOINT_NAMES",
    "SMPL_VERTEX_JOINTS",
    "SMPLH_JOINT_NAMES",
    "BodyModelNotFoundError",
    "body_model_search_dirs",
    "find_body_model_file",
    "load_body_model_arrays",
    "load_joint_regressor",
]
