"""MediaPipe BlazePose (Bazarevsky et al. 2020) keypoints, several people per image.

The two networks (pose_detection.tflite, pose_landmark_full.tflite) ship inside the mediapipe
0.10.x wheels, so nothing is downloaded. MediaPipe's Pose solution tracks ONE person per call;
for several people this detector runs it, masks the person it found with grey, and runs it again
until no person is found (or ``max_people``), the common way to get several bodies out of a
single-person model. A person hidden behind another may be missed.
"""

from __future__ import annotations

import threading

import numpy as np

from meshrec.detectors import Detections, check_image
from meshrec_detect.layouts import LAYOUT_NAMES, blazepose_to_layout

__all__ = ["BlazePoseDetector"]

_INSTALL = ("pip install --no-deps mediapipe==0.10.21 && pip install 'meshrec-detect[blazepose]' "
            "(mediapipe 0.10.21 holds BlazePose's weights; its metadata pins numpy<2 but it runs with numpy 2)")


def _pose_module():
    try:
        from mediapipe.python.solutions import pose
    except ImportError as error:
        raise ImportError(f"the 'blazepose' detector needs mediapipe ({error}): {_INSTALL}") from None
    return pose


class BlazePoseDetector:
    """33 BlazePose landmarks per person, returned in ``layout`` (coco17 by default).

    Args:
        layout: "coco17", "openpose25" (missing joints at confidence 0) or "blazepose33".
        max_people: the most people to look for in one image.
        min_detection_confidence: MediaPipe's person-detection threshold.
        model_complexity: 0 (lite), 1 (full; the weights in the wheel), 2 (heavy: not in the wheel,
            mediapipe would download it, so it is refused).
        min_visible: a keypoint with visibility below this does not count towards the person's box.
    """

    name = "blazepose"
    kind = "keypoints"
    layout = "coco17"
    summary = "MediaPipe BlazePose keypoints"

    def __init__(self, layout: str = "coco17", max_people: int = 8, min_detection_confidence: float = 0.5,
                 model_complexity: int = 1, min_visible: float = 0.5) -> None:
        if layout not in LAYOUT_NAMES:
            raise ValueError(f"layout must be one of {LAYOUT_NAMES}, got {layout!r}")
        if model_complexity not in (0, 1):
            raise ValueError("model_complexity must be 0 or 1: the heavy model (2) is not inside the mediapipe "
                             f"wheel and would be downloaded, got {model_complexity!r}")
        if max_people < 1:
            raise ValueError(f"max_people must be positive, got {max_people}")
        pose = _pose_module()
        self.layout = layout
        self.max_people, self.min_visible = int(max_people), float(min_visible)
        self._pose = pose.Pose(static_image_mode=True, model_complexity=model_complexity,
                               min_detection_confidence=float(min_detection_confidence))
        self._lock = threading.Lock()  # a MediaPipe graph runs one image at a time

    def detect_blazepose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (P, 4) xyxy px, scores (P,) (mean landmark visibility), landmarks (P, 33, 3)."""
        image = check_image(image)
        height, width = image.shape[:2]
        work = image.copy()
        people, boxes, scores = [], [], []
        with self._lock:
            for _ in range(self.max_people):
                result = self._pose.process(work)
                if result.pose_landmarks is None:
                    break
                points = np.array([[mark.x * width, mark.y * height, mark.visibility]
                                   for mark in result.pose_landmarks.landmark], dtype=np.float32)
                points[:, 2] = points[:, 2].clip(0.0, 1.0)
                inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
                points[~inside, 2] = 0.0  # a landmark outside the photo is a guess
                seen = points[points[:, 2] >= self.min_visible]
                if len(seen) < 4:
                    break
                x1, y1 = seen[:, :2].min(axis=0)
                x2, y2 = seen[:, :2].max(axis=0)
                w, h = x2 - x1, y2 - y1
                # the landmarks are joints: the body reaches a little beyond them (head top, feet)
                box = np.array([x1 - 0.1 * w, y1 - 0.12 * h, x2 + 0.1 * w, y2 + 0.04 * h], dtype=np.float32)
                box[[0, 2]] = box[[0, 2]].clip(0, width)
                box[[1, 3]] = box[[1, 3]].clip(0, height)
                people.append(points)
                boxes.append(box)
                scores.append(float(points[:, 2].mean()))
                a, b, c, d = (int(v) for v in box.round())
                work[b:d, a:c] = 127  # hide this person so the next call finds another
        if not people:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 33, 3), np.float32)
        order = np.argsort(-np.asarray(scores), kind="stable")
        return np.stack(boxes)[order], np.asarray(scores, np.float32)[order], np.stack(people)[order]

    def detect(self, image: np.ndarray) -> Detections:
        """People in ``image`` (H, W, 3) uint8 RGB: boxes, scores and keypoints (P, K, 3) in ``layout``."""
        boxes, scores, landmarks = self.detect_blazepose(image)
        return Detections(boxes, scores, keypoints=blazepose_to_layout(landmarks, self.layout), layout=self.layout)

    def close(self) -> None:
        self._pose.close()
