"""The detectors, the front door and the overlay on a real photograph: ultralytics' bus.jpg
(810x1080, four pedestrians in front of a bus), read from the installed ``ultralytics`` wheel at
test time (never committed). ``pip install --no-deps ultralytics`` provides it."""

from __future__ import annotations


import numpy as np
import pytest

from meshrec.body.keypoints import get_layout
from meshrec.testing.photos import bus_photo, require_mediapipe


# Boxes annotated by hand on bus.jpg (x1, y1, x2, y2 pixels, head top to soles, hands included).
STANDING = {
    "beige coat": (50, 398, 245, 900),
    "black coat": (222, 405, 345, 860),
    "right, cut by the border": (668, 400, 810, 878),
}
# Only the shoulder-to-ankle sliver of this one is in the photo: not expected to be found.
PARTIAL = {"left border": (0, 555, 80, 872)}


def iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _image() -> np.ndarray:
    from meshrec.io.images import read_image

    return read_image(bus_photo(), name="bus.jpg")


def _match(boxes: np.ndarray) -> dict[str, float]:
    """Best IoU of each annotated person with the detected boxes."""
    return {name: max((iou(box, found) for found in boxes), default=0.0) for name, box in STANDING.items()}


def test_hog_finds_the_person_in_the_light_coat_and_nothing_else():
    from meshrec_detect.hog import HOGPersonDetector

    found = HOGPersonDetector().detect(_image())
    # HOG (a 2005 sliding-window detector) finds the person in the light coat; the one in a
    # black coat against the blue bus and the one cut by the border are below its threshold.
    assert _match(found.boxes)["beige coat"] > 0.5
    everyone = list(STANDING.values()) + list(PARTIAL.values())
    assert all(max(iou(box, person) for person in everyone) > 0.3 for box in found.boxes), found.boxes


def test_blazepose_finds_the_standing_people_with_keypoints_inside_their_boxes():
    require_mediapipe()
    from meshrec_detect.blazepose import BlazePoseDetector

    found = BlazePoseDetector().detect(_image())
    matched = _match(found.boxes)
    assert sum(value > 0.5 for value in matched.values()) >= 2 and matched["beige coat"] > 0.5, matched
    assert len(found) <= len(STANDING) + len(PARTIAL)
    assert found.layout == "coco17" and found.keypoints.shape == (len(found), 17, 3)
    for box, points in zip(found.boxes, found.keypoints):
        confident = points[points[:, 2] > 0.5]
        assert len(confident) >= 5  # the person cut by the border shows 6
        x1, y1, x2, y2 = box
        inside = (confident[:, 0] >= x1) & (confident[:, 0] <= x2) & (confident[:, 1] >= y1) & (confident[:, 1] <= y2)
        assert inside.all(), (box, confident)


@pytest.mark.slow
def test_fit_on_the_photo_reprojects_onto_the_detected_keypoints_and_renders_over_the_people(body_models_dir,
                                                                                           monkeypatch):
    require_mediapipe()
    import meshrec
    from meshrec.camera import default_intrinsics
    from meshrec.io import overlay
    from meshrec.io.overlay import render_overlay
    from meshrec.io.render import rasterize

    monkeypatch.setattr(overlay, "_warned_default", False)  # the warning comes once per process

    image = _image()
    with pytest.warns(UserWarning, match="default focal length = image diagonal"):
        prediction = meshrec.predict(bus_photo(), method="fit", body_model=body_models_dir, device="cpu",
                                     detector="blazepose", schedule="fast")
        picture = render_overlay(prediction, image)
    assert 2 <= prediction.num_people <= 4
    # mean reprojection error on the confident detected keypoints
    from meshrec_detect.blazepose import BlazePoseDetector

    found = BlazePoseDetector().detect(image)
    layout = get_layout("coco17")
    names = list(prediction.joint_names)
    joints = prediction.joints[:, [names.index(source) for source in layout.sources]].double()
    K = default_intrinsics(image.shape[0], image.shape[1], joints.dtype)
    projected = (joints @ K.T)
    projected = (projected[..., :2] / projected[..., 2:]).numpy()
    errors = []
    for points in found.keypoints:  # each detection against the body closest to it
        confident = points[:, 2] > 0.5
        distance = [np.linalg.norm(body[confident] - points[confident, :2], axis=1).mean() for body in projected]
        errors.append(min(distance))
    # pixels, on people ~450-500 px tall; measured 5.4-6.3 px with schedule="fast", 1.6-2.8 px default
    assert np.mean(errors) < 12.0, errors
    # the drawn silhouettes cover the people's boxes, and the picture changed only there
    silhouette = np.zeros(image.shape[:2], bool)
    for body in prediction.vertices.double().numpy():
        silhouette |= np.isfinite(rasterize(body, prediction.faces.numpy(), K.numpy(), (image.shape[1], image.shape[0])).depth)
    for name in ("beige coat", "black coat"):
        x1, y1, x2, y2 = STANDING[name]
        assert silhouette[y1:y2, x1:x2].mean() > 0.2, name
    changed = np.abs(picture.astype(int) - image.astype(int)).sum(axis=2) > 0
    assert changed[~silhouette].mean() < 0.001 and changed[silhouette].mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["blazepose", "hog"])
def test_a_box_method_gets_one_body_per_detected_person(detector, body_models_dir):
    import meshrec

    if "example" not in meshrec.list_methods():
        pytest.skip("needs the example method: pip install --no-build-isolation ./plugins/example")
    if detector == "blazepose":
        require_mediapipe()
    from meshrec.detectors import _instance
    from meshrec.plugins import get_plugin_manager

    found = _instance(get_plugin_manager().detectors(), detector, **({"layout": "coco17"} if detector == "blazepose" else {})).detect(_image())
    prediction = meshrec.predict(bus_photo(), method="example", body_model=body_models_dir, device="cpu", detector=detector)
    assert prediction.num_people == len(found) >= 1
    # each template body (arms out, so wider than a person) stands in its detected box: its
    # projection spans the box's height and is centred on it
    from meshrec.camera import default_intrinsics

    K = default_intrinsics(1080, 810, torch_dtype()).numpy()
    for box, body in zip(found.boxes, prediction.vertices.double().numpy()):
        projected = body @ K.T
        uv = projected[:, :2] / projected[:, 2:]
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        height = box[3] - box[1]
        assert abs(lo[1] - box[1]) < 0.1 * height and abs(hi[1] - box[3]) < 0.1 * height, (box, lo, hi)
        assert abs((lo[0] + hi[0]) / 2 - (box[0] + box[2]) / 2) < 0.1 * height, (box, lo, hi)
    none = meshrec.predict(bus_photo(), method="example", body_model=body_models_dir, device="cpu", detector=None)
    assert none.num_people == 1  # without a detector the method's old behaviour: the whole photo


def torch_dtype():
    import torch

    return torch.float64
