"""Evaluation metrics for human mesh recovery: functional metrics, scene plausibility,
multi-person matching, and evaluators that report the protocols of published methods.

Functional metrics take tensors of shape (..., N, 3) and return per-sample values with the batch
shape, in the units of their inputs (metres in meshrec). Evaluators accumulate a dataset and
report millimetres. The protocols are compared in docs/metrics.md.

>>> from meshrec import metrics
>>> metrics.pa_mpjpe(pred_joints, gt_joints) * 1000          # (B,) millimetres
>>> evaluator = metrics.evaluator("3dpw-mmhuman3d", body_model="~/body_models")
"""

from meshrec.metrics.evaluators import (
    EgoBodyEvaluator,
    Evaluator,
    JointMeshEvaluator,
    SceneEvaluator,
    evaluator,
    image_visibility,
)
from meshrec.metrics.functional import (
    acceleration_error,
    align_root,
    auc,
    average_pairwise_distance,
    joint_errors,
    masked_mean,
    mpjpe,
    pa_mpjpe,
    pck,
    pve,
    root_positions,
    sample_std,
    scale_aligned_mpjpe,
)
from meshrec.metrics.matching import (
    DetectionScores,
    Matching,
    detection_scores,
    greedy_match_2d,
    keypoint_box_iou,
    match_people,
    pcrd,
    relative_depth_pairs,
)
from meshrec.metrics.protocols import (
    H36M_EVAL_14,
    H36M_PELVIS,
    H36M_TO_J14,
    PROTOCOLS,
    SAHMR_H36M_TO_J14,
    SMPL_PELVIS,
    BodyModelSet,
    Protocol,
    get_protocol,
    list_protocols,
)
from meshrec.metrics.scene import (
    collision_ratio,
    contact_distance,
    contact_fit_error,
    penetration_error,
    scene_sdf,
)

__all__ = [
    "BodyModelSet",
    "DetectionScores",
    "EgoBodyEvaluator",
    "Evaluator",
    "H36M_EVAL_14",
    "H36M_PELVIS",
    "H36M_TO_J14",
    "JointMeshEvaluator",
    "Matching",
    "PROTOCOLS",
    "Protocol",
    "SAHMR_H36M_TO_J14",
    "SMPL_PELVIS",
    "SceneEvaluator",
    "acceleration_error",
    "align_root",
    "auc",
    "average_pairwise_distance",
    "collision_ratio",
    "contact_distance",
    "contact_fit_error",
    "detection_scores",
    "evaluator",
    "get_protocol",
    "greedy_match_2d",
    "image_visibility",
    "joint_errors",
    "keypoint_box_iou",
    "list_protocols",
    "masked_mean",
    "match_people",
    "mpjpe",
    "pa_mpjpe",
    "pck",
    "pcrd",
    "penetration_error",
    "pve",
    "relative_depth_pairs",
    "root_positions",
    "sample_std",
    "scale_aligned_mpjpe",
    "scene_sdf",
]
