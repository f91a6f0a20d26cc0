"""MediaPipe BlazePose's 33-landmark layout and its mapping to meshrec's COCO-17 / OpenPose-25.

BlazePose names its landmarks from the person's point of view, as COCO and OpenPose do. Joints
a target layout has and BlazePose lacks (OpenPose's small toes) get confidence 0, so a fitter
ignores them; OpenPose's neck and mid-hip are the midpoints of the shoulders and of the hips,
with the smaller confidence of the two.
"""

from __future__ import annotations

import numpy as np

from meshrec.body.keypoints import get_layout

__all__ = ["BLAZEPOSE33", "blazepose_to_layout", "LAYOUT_NAMES"]

BLAZEPOSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
LAYOUT_NAMES = ("blazepose33", "coco17", "openpose25")

# target keypoint -> BlazePose landmark(s); two names mean their midpoint
_RENAME = {"left_big_toe": ("left_foot_index",), "right_big_toe": ("right_foot_index",),
           "neck": ("left_shoulder", "right_shoulder"), "mid_hip": ("left_hip", "right_hip")}


def blazepose_to_layout(keypoints: np.ndarray, layout: str) -> np.ndarray:
    """BlazePose keypoints (..., 33, 3) (x, y, confidence) in ``layout``: (..., K, 3).

    ``layout`` is "blazepose33" (returned as is), "coco17" or "openpose25"; missing joints are
    at (0, 0) with confidence 0.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape[-2:] != (33, 3):
        raise ValueError(f"BlazePose keypoints are (..., 33, 3), got {keypoints.shape}")
    if layout == "blazepose33":
        return keypoints.copy()
    names = get_layout(layout).keypoints
    out = np.zeros(keypoints.shape[:-2] + (len(names), 3), np.float32)
    for index, name in enumerate(names):
        sources = _RENAME.get(name, (name,))
        if not all(source in BLAZEPOSE33 for source in sources):
            continue  # not observed by BlazePose: confidence 0
        picked = keypoints[..., [BLAZEPOSE33.index(source) for source in sources], :]
        out[..., index, :2] = picked[..., :2].mean(axis=-2)
        out[..., index, 2] = picked[..., 2].min(axis=-1)
    return out
