"""Detectors in the front door (meshrec.predict / meshrec predict fill missing boxes and keypoints)
and the overlay (--render), with toy detectors registered in-process (no detector plugin needed)."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import meshrec
from meshrec.camera import default_intrinsics
from meshrec.detectors import Detections, check_image, detect_missing_inputs

WIDTH, HEIGHT = 64, 48
PEOPLE = [(8, 10, 20, 40), (36, 6, 56, 44)]  # x1, y1, x2, y2 of the two bright rectangles


def _photo() -> np.ndarray:
    image = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
    for x1, y1, x2, y2 in PEOPLE:
        image[y1:y2, x1:x2] = 220
    return image


def _blobs(image: np.ndarray) -> np.ndarray:
    """Boxes of the bright columns' runs: the toy detectors' 'vision'."""
    bright = check_image(image).max(axis=2) > 128
    cols = np.nonzero(bright.any(axis=0))[0]
    boxes = []
    for run in np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1) if len(cols) else []:
        rows = np.nonzero(bright[:, run].any(axis=1))[0]
        boxes.append([run[0], rows[0], run[-1] + 1, rows[-1] + 1])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


class ToyPerson:
    name, kind = "toy-person", "person"
    calls = 0

    def detect(self, image):
        ToyPerson.calls += 1
        boxes = _blobs(image)
        return Detections(boxes, np.linspace(1, 0.5, len(boxes)))


class ToyKeypoints:
    name, kind, layout = "toy-keypoints", "keypoints", "coco17"

    def __init__(self, layout="coco17"):
        if layout != "coco17":
            raise ValueError(f"toy-keypoints gives coco17 only, asked for {layout}")

    def detect(self, image):
        boxes = _blobs(image)
        points = np.zeros((len(boxes), 17, 3), np.float32)
        points[:, :, 0] = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
        points[:, :, 1] = np.linspace(boxes[:, 1], boxes[:, 3], 17, axis=1)
        points[:, :, 2] = 0.9
        return Detections(boxes, np.ones(len(boxes)), keypoints=points, layout="coco17")


class StubbornKeypoints(ToyKeypoints):
    name = "stubborn"

    def __init__(self, **options):  # ignores the layout it is asked for
        pass


class Unavailable:
    name, kind = "broken", "keypoints"  # sorts before toy-keypoints: tried first
    layout = "coco17"

    def __init__(self, **options):
        raise ImportError("needs a package that is not installed")

    def detect(self, image):  # pragma: no cover
        raise AssertionError


class BoxBodies(meshrec.Method):
    """One flat rectangle per box, 2 m in front of the default camera, covering the box."""

    name = "box-bodies"
    summary = "a rectangle per box"
    body_model_type = None
    needs_checkpoint = False
    inputs = frozenset({meshrec.Input.IMAGE})
    optional_inputs = frozenset({meshrec.Input.BBOX, meshrec.Input.KEYPOINTS})

    @classmethod
    def build(cls, checkpoint, body_model, device, **options):
        return cls(torch.nn.Identity(), None, device, **options)

    def predict_batch(self, samples):
        out = []
        for sample in samples:
            boxes = torch.zeros(0, 4, dtype=torch.float64) if sample.bbox is None else torch.as_tensor(sample.bbox, dtype=torch.float64)
            K = default_intrinsics(HEIGHT, WIDTH, torch.float64)
            corners = torch.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], dim=1)
            rays = (torch.cat([corners, torch.ones_like(corners[..., :1])], -1) @ torch.linalg.inv(K).T)
            vertices = (rays * 2.0).float()
            count = len(boxes)
            out.append(meshrec.Prediction(
                vertices=vertices, joints=vertices[:, :1], global_orient=torch.eye(3).expand(count, 3, 3),
                body_pose=torch.eye(3).expand(count, 23, 3, 3), betas=torch.zeros(count, 10),
                transl=torch.zeros(count, 3), scores=torch.ones(count), faces=torch.tensor([[0, 1, 2], [0, 2, 3]]),
                extras={"bbox": boxes, "keypoints": None if sample.keypoints is None else torch.as_tensor(sample.keypoints)}))
        return out


def _register(plugin_manager, *detectors):
    def meshrec_register_methods(registry):
        registry.add(BoxBodies)

    def meshrec_register_detectors(registry):
        for detector in detectors:
            registry.add(detector.name, detector)

    plugin = types.SimpleNamespace(meshrec_register_methods=meshrec.hookimpl(meshrec_register_methods),
                                   meshrec_register_detectors=meshrec.hookimpl(meshrec_register_detectors))
    plugin_manager.register(plugin, name="toys")


def test_predict_fills_missing_boxes_and_only_those(plugin_manager):
    _register(plugin_manager, ToyPerson)
    ToyPerson.calls = 0
    prediction = meshrec.predict(_photo(), method="box-bodies", device="cpu")
    assert prediction.extras["bbox"].tolist() == [list(map(float, box)) for box in PEOPLE]
    assert prediction.num_people == 2 and ToyPerson.calls == 1
    given = meshrec.predict(_photo(), method="box-bodies", device="cpu", bbox=[1, 2, 3, 4], bbox_format="xyxy")
    assert given.extras["bbox"].tolist() == [[1, 2, 3, 4]] and ToyPerson.calls == 1
    assert meshrec.predict(_photo(), method="box-bodies", device="cpu", detector=None).num_people == 0
    with pytest.raises(KeyError, match=r"unknown detector 'nope'; installed detectors: toy-person \(person\)"):
        meshrec.predict(_photo(), method="box-bodies", device="cpu", detector="nope")
    with pytest.warns(UserWarning, match="found no person in input"):
        empty = meshrec.predict(np.zeros((HEIGHT, WIDTH, 3), np.uint8), method="box-bodies", device="cpu")
    assert empty.num_people == 0


def test_auto_prefers_a_keypoint_detector_and_skips_one_that_cannot_run(plugin_manager):
    _register(plugin_manager, ToyPerson, ToyKeypoints, Unavailable)
    with pytest.warns(UserWarning, match="'broken' is installed but cannot run: needs a package"):
        prediction = meshrec.predict(_photo(), method="box-bodies", device="cpu")
    points = prediction.extras["keypoints"]
    assert points.shape == (2, 17, 3) and prediction.extras["bbox"].shape == (2, 4)
    # the same detection gave both: each person's keypoints lie in its own box
    for box, person in zip(prediction.extras["bbox"], points):
        assert ((person[:, 0] >= box[0]) & (person[:, 0] <= box[2]) & (person[:, 1] >= box[1]) & (person[:, 1] <= box[3])).all()
    with pytest.raises(ImportError, match="not installed"):
        meshrec.predict(_photo(), method="box-bodies", device="cpu", detector="broken")
    person_only = meshrec.predict(_photo(), method="box-bodies", device="cpu", detector="toy-person")
    assert person_only.extras["keypoints"] is None and person_only.num_people == 2


def test_keypoints_in_another_layout_are_refused(plugin_manager):
    _register(plugin_manager, StubbornKeypoints, ToyKeypoints)
    samples = [meshrec.Sample(index=0, source="photo", image_source=_photo())]
    accepted, registry = BoxBodies.accepted_inputs(), plugin_manager.detectors()
    with pytest.raises(ValueError, match="'stubborn' returns coco17 keypoints, the method reads openpose25"):
        detect_missing_inputs(accepted, samples, "stubborn", keypoint_layout="openpose25", registry=registry)
    with pytest.raises(ValueError, match="coco17 only, asked for openpose25"):
        detect_missing_inputs(accepted, samples, "toy-keypoints", keypoint_layout="openpose25", registry=registry)
    assert samples[0].keypoints is None
    assert detect_missing_inputs(accepted, samples, "toy-keypoints", registry=registry) == "toy-keypoints"
    assert samples[0].keypoints.shape == (2, 17, 3)


def test_detections_check_their_shapes():
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1))
    with pytest.raises(ValueError, match=r"keypoints must be \(P=1, K, 3\)"):
        Detections(np.zeros((1, 4)), np.zeros(1), keypoints=np.zeros((2, 17, 3)), layout="coco17")
    with pytest.raises(ValueError, match="need the name of their layout"):
        Detections(np.zeros((1, 4)), np.zeros(1), keypoints=np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB"):
        check_image(np.zeros((10, 10)))


def test_overlay_draws_each_person_over_its_box_only(plugin_manager, monkeypatch):
    from meshrec.io import overlay

    _register(plugin_manager, ToyPerson)
    prediction = meshrec.predict(_photo(), method="box-bodies", device="cpu")
    monkeypatch.setattr(overlay, "_warned_default", False)
    with pytest.warns(UserWarning, match=r"default focal length = image diagonal \(80 px for 64x48"):
        picture = overlay.render_overlay(prediction, _photo())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        overlay.render_overlay(prediction, _photo())
    changed = np.abs(picture.astype(int) - _photo().astype(int)).sum(axis=2) > 0
    inside = np.zeros_like(changed)
    for x1, y1, x2, y2 in PEOPLE:
        inside[y1:y2, x1:x2] = True
    near = np.zeros_like(changed)  # the boxes grown by a pixel: edge pixels are partly covered
    for x1, y1, x2, y2 in PEOPLE:
        near[y1 - 1:y2 + 1, x1 - 1:x2 + 1] = True
    assert changed[inside].mean() > 0.9 and not changed[~near].any()
    (a, b), (c, d) = [(y1 + y2) // 2 for _, y1, _, y2 in PEOPLE], [(x1 + x2) // 2 for x1, _, x2, _ in PEOPLE]
    assert picture[a, c].tolist() != picture[b, d].tolist()  # one colour per person
    # the method's intrinsics win over the default: a doubled focal length draws elsewhere
    K = default_intrinsics(HEIGHT, WIDTH) * torch.tensor([[2.0], [2.0], [1.0]])
    prediction.extras["intrinsics"] = K
    moved = overlay.render_overlay(prediction, _photo())
    assert not np.array_equal(moved, picture)
    side = overlay.render_side_view(prediction, (WIDTH, HEIGHT))
    assert side.shape == (HEIGHT, WIDTH, 3)


def test_cli_predict_detects_and_renders(plugin_manager, tmp_path, capsys):
    from meshrec.cli import main

    _register(plugin_manager, ToyPerson)
    Image.fromarray(_photo()).save(tmp_path / "photo.png")
    assert main(["predict", str(tmp_path / "photo.png"), "--method", "box-bodies", "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--render"]) == 0
    assert "2 people" in capsys.readouterr().out
    overlay_png = np.asarray(Image.open(tmp_path / "out" / "photo_overlay.png"))
    assert overlay_png.shape == (HEIGHT, WIDTH, 3) and not np.array_equal(overlay_png, _photo())
    assert (tmp_path / "out" / "photo_side.png").is_file()
    assert main(["predict", str(tmp_path / "photo.png"), "--method", "box-bodies", "--device", "cpu",
                 "--out", str(tmp_path / "off"), "--detector", "none"]) == 0
    assert "photo.png: 0 people" in capsys.readouterr().out
