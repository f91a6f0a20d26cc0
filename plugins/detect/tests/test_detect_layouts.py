"""BlazePose-33 -> COCO-17 / OpenPose-25 mapping, and the plugin's registrations."""

from __future__ import annotations

import numpy as np
import pytest

from meshrec.body.keypoints import get_layout
from meshrec_detect.layouts import BLAZEPOSE33, blazepose_to_layout


def _landmarks(people: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = np.zeros((people, 33, 3), np.float32)
    points[..., :2] = rng.uniform(0, 500, (people, 33, 2))
    points[..., 2] = rng.uniform(0.1, 1.0, (people, 33))
    return points


def test_coco17_takes_the_same_named_landmarks():
    points = _landmarks()
    coco = blazepose_to_layout(points, "coco17")
    assert coco.shape == (2, 17, 3)
    for index, name in enumerate(get_layout("coco17").keypoints):
        assert name in BLAZEPOSE33, name  # BlazePose observes every COCO keypoint
        np.testing.assert_array_equal(coco[:, index], points[:, BLAZEPOSE33.index(name)])


def test_openpose25_midpoints_toes_and_missing_joints():
    points = _landmarks(1)
    op = blazepose_to_layout(points, "openpose25")
    names = get_layout("openpose25").keypoints
    at = lambda name: op[0, names.index(name)]  # noqa: E731
    bp = lambda name: points[0, BLAZEPOSE33.index(name)]  # noqa: E731
    np.testing.assert_allclose(at("neck")[:2], (bp("left_shoulder")[:2] + bp("right_shoulder")[:2]) / 2, rtol=1e-6)
    assert at("neck")[2] == min(bp("left_shoulder")[2], bp("right_shoulder")[2])
    np.testing.assert_allclose(at("mid_hip")[:2], (bp("left_hip")[:2] + bp("right_hip")[:2]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(at("left_big_toe"), bp("left_foot_index"))
    np.testing.assert_array_equal(at("right_heel"), bp("right_heel"))
    np.testing.assert_array_equal(at("right_knee"), bp("right_knee"))
    for missing in ("left_small_toe", "right_small_toe"):
        assert at(missing).tolist() == [0.0, 0.0, 0.0]
    assert (op[0, :, 2] > 0).sum() == 23


def test_mapping_checks_its_input():
    with pytest.raises(ValueError, match=r"\(\.\.\., 33, 3\)"):
        blazepose_to_layout(np.zeros((17, 3)), "coco17")
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        blazepose_to_layout(np.zeros((33, 3)), "smpl24")
    np.testing.assert_array_equal(blazepose_to_layout(_landmarks(1), "blazepose33"), _landmarks(1))


def test_the_plugin_registers_both_detectors():
    from meshrec.plugins import get_plugin_manager

    registry = get_plugin_manager().detectors()
    assert registry.kind_of("hog") == "person" and registry.kind_of("blazepose") == "keypoints"
    assert registry["hog"].plugin == "detect"
