"""OpenCV's HOG people detector (Dalal & Triggs 2005, trained on INRIA Person; the linear SVM's
weights are compiled into OpenCV, so nothing is downloaded)."""

from __future__ import annotations

import numpy as np

from meshrec.detectors import Detections, check_image

__all__ = ["HOGPersonDetector"]


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("the 'hog' detector needs OpenCV 4: pip install 'opencv-python-headless>=4.10,<5'") from None
    if not hasattr(cv2, "HOGDescriptor"):
        raise ImportError(f"OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 removed it): "
                          "pip install 'opencv-python-headless>=4.10,<5'")
    return cv2


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _suppress(boxes: np.ndarray, scores: np.ndarray, iou: float, contain: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression; a box mostly inside a kept one goes too
    (HOG fires on a person's upper body inside the full-body window)."""
    order = np.argsort(-scores)
    kept: list[int] = []
    for index in order:
        box = boxes[index]
        if kept:
            others = boxes[kept]
            if (_iou(box, others) > iou).any():
                continue
            x1 = np.maximum(box[0], others[:, 0]); y1 = np.maximum(box[1], others[:, 1])  # noqa: E702
            x2 = np.minimum(box[2], others[:, 2]); y2 = np.minimum(box[3], others[:, 3])  # noqa: E702
            inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
            if (inter / ((box[2] - box[0]) * (box[3] - box[1])) > contain).any():
                continue
        kept.append(int(index))
    return np.asarray(kept, dtype=np.int64)


class HOGPersonDetector:
    """Boxes around standing / walking people (upright, at least ~100 px tall at ``max_side``).

    Args:
        max_side: the image is resized so that its longer side is at most this many pixels before
            detection (HOG's cost grows with the area; people much smaller than 128 px at this
            size are missed).
        hit_threshold: SVM margin a window needs (higher: fewer false positives).
        scale: image pyramid step.
        min_score: boxes with a smaller summed SVM weight are dropped.
        tighten: HOG's 64x128 window holds the person with a margin; the box is shrunk to
            (width, height) fractions ``tighten`` around its centre to fit the body.
    """

    name = "hog"
    kind = "person"
    summary = "OpenCV HOG people detector"

    def __init__(self, max_side: int = 640, hit_threshold: float = 0.0, scale: float = 1.05,
                 min_score: float = 0.5, tighten: tuple[float, float] = (0.75, 0.9)) -> None:
        if max_side < 128:
            raise ValueError(f"max_side must be at least 128 (HOG's window is 64x128), got {max_side}")
        if not scale > 1.0:
            raise ValueError(f"scale must be > 1, got {scale}")
        cv2 = _cv2()
        self.max_side, self.hit_threshold, self.scale = int(max_side), float(hit_threshold), float(scale)
        self.min_score, self.tighten = float(min_score), tuple(float(value) for value in tighten)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: np.ndarray) -> Detections:
        """People in ``image`` (H, W, 3) uint8 RGB: boxes (P, 4) x1 y1 x2 y2 pixels, SVM scores."""
        cv2 = _cv2()
        image = check_image(image)
        height, width = image.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        small = cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA) \
            if factor < 1.0 else image
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        rects, weights = self._hog.detectMultiScale(gray, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                    padding=(16, 16), scale=self.scale)
        if len(rects) == 0:
            return Detections(np.zeros((0, 4)), np.zeros(0))
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / factor
        scores = np.asarray(weights, dtype=np.float64).reshape(-1)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 * np.asarray(self.tighten)
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = scores >= self.min_score
        boxes, scores = boxes[keep], scores[keep]
        kept = _suppress(boxes, scores, iou=0.4, contain=0.7)
        return Detections(boxes[kept], scores[kept])
