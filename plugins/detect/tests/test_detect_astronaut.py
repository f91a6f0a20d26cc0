"""BlazePose and the fit on an upper-body photograph: scikit-image's ``astronaut.png`` (512x512,
Eileen Collins in her orange suit, cut by the border at the waist, a helmet in front of her left
arm), read from the installed ``scikit-image`` wheel at test time (never committed, never
imported). ``pip install --no-deps scikit-image`` provides it."""

from __future__ import annotations


import numpy as np
import pytest

from meshrec.body.keypoints import get_layout
from meshrec.testing.photos import astronaut_photo, require_mediapipe


def _image() -> np.ndarray:
    from meshrec.io.images import read_image

    return read_image(astronaut_photo(), name="astronaut.png")


def iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# Annotated by hand on astronaut.png (pixels): the person from the top of her hair to the bottom
# border, from her right sleeve (image left) to the suit's left side (image right, the helmet
# excluded), and the joints that can be seen.
PERSON = (19, 15, 362, 512)
VISIBLE = {"nose": (222, 125), "right_shoulder": (108, 240), "left_shoulder": (310, 255), "right_elbow": (58, 415)}
# Her left elbow is behind the helmet; hips, knees and ankles are below the border.
LOWER_BODY = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")


def _detect():
    require_mediapipe()
    from meshrec_detect.blazepose import BlazePoseDetector

    return BlazePoseDetector(layout="coco17").detect(_image())


def test_blazepose_finds_exactly_theastronaut_photo():
    found = _detect()
    assert len(found) == 1, found.boxes  # not the helmet, not the shuttle model
    # BlazePose's box spans the confident landmarks (head to elbows) with a margin: measured IoU
    # 0.62 with the hand box, inside it (the hands and the waist are unconfident)
    assert iou(found.boxes[0], PERSON) > 0.5, found.boxes[0]
    x1, y1, x2, y2 = found.boxes[0]
    assert x1 >= PERSON[0] - 10 and y1 >= PERSON[1] - 10 and x2 <= PERSON[2] + 10 and y2 <= PERSON[3]


def test_the_visible_upper_body_is_confident_and_where_it_is_seen():
    found = _detect()
    names = get_layout("coco17").keypoints
    points = found.keypoints[0]
    x1, y1, x2, y2 = found.boxes[0]
    for name, (u, v) in VISIBLE.items():
        x, y, confidence = points[names.index(name)]
        # measured: 1.0 (nose, shoulders) and 0.8 (right elbow); within 7 px of the hand marks
        assert confidence > 0.6, (name, confidence)
        assert np.hypot(x - u, y - v) < 20, (name, x, y)
        assert x1 <= x <= x2 and y1 <= y <= y2, (name, x, y, found.boxes[0])
    for name in ("left_elbow", *LOWER_BODY):  # measured 0.3 (behind the helmet), the lower body at most 0.2
        assert points[names.index(name), 2] < 0.5, (name, points[names.index(name)])


@pytest.mark.slow
def test_fit_on_the_upper_body_reprojects_onto_the_confident_keypoints(body_models_dir):
    import torch

    import meshrec
    from meshrec.camera import default_intrinsics

    found = _detect()
    K = default_intrinsics(512, 512, torch.float64)
    # the low-confidence lower body goes in as detected: the fit must cope with it
    prediction = meshrec.predict(astronaut_photo(), method="fit", body_model=body_models_dir, device="cpu",
                                 detector="blazepose", camera=K.numpy(), schedule="fast")
    assert prediction.num_people == 1
    assert torch.isfinite(prediction.vertices).all() and (prediction.vertices[..., 2] > 0).all()
    layout = get_layout("coco17")
    names = list(prediction.joint_names)
    joints = prediction.joints[0, [names.index(source) for source in layout.sources]].double()
    projected = joints @ K.T
    uv = (projected[:, :2] / projected[:, 2:]).numpy()
    points = found.keypoints[0]
    confident = points[:, 2] > 0.5
    assert confident.sum() == 8  # face (5), shoulders, right elbow
    error = np.linalg.norm(uv[confident] - points[confident, :2], axis=1).mean()
    # pixels, on a person whose head-to-elbow span is ~300 px; measured 9.0 px with
    # schedule="fast" (4.6 px with the default schedule); bound 1.5x the measured
    assert error < 13.5, error
