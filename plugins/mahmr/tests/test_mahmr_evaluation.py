"""Greedy matching, the Relative Human reader and metrics, matched 3D errors, 3DPCK."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec_mahmr.evaluation import (RHAccumulator, matched_errors, pck3d_bone_rescaled, read_relative_human)
from meshrec.metrics.matching import greedy_match_2d, keypoint_box_iou


def person(x, y, size=100.0, joints=24):
    g = np.random.default_rng(int(x * 7 + y))
    return np.stack([x + g.uniform(0, size, joints), y + g.uniform(0, size, joints)], -1)


def test_keypoint_box_iou_pixel_inclusive():
    a = np.array([[0.0, 0], [9, 9]])  # 10 x 10 pixels
    b = np.array([[5.0, 0], [14, 9]])  # overlaps 5 x 10
    assert keypoint_box_iou(a, b) == pytest.approx(50 / 150)


def test_greedy_differs_from_optimal_and_gates_on_iou():
    """Cheapest pair first: pred 0 takes GT 0 although pred 1 needs it more; a far prediction is
    a false positive and its ground truth a miss."""
    gt = np.stack([person(0, 0), person(60, 0), person(1000, 1000)])
    pred = np.stack([gt[0] + 1.0, gt[0] + 3.0, person(3000, 3000)])
    match = greedy_match_2d(pred, gt)
    assert match.pairs.tolist() == [[0, 0], [1, 1]]
    assert match.false_positives.tolist() == [2] and match.misses.tolist() == [2]
    # the pair error is the spectral norm of the (J, 2) difference: every row (1, 1) -> sqrt(2 J)
    assert match.costs[0].item() == pytest.approx(math.sqrt(2 * 24))
    # pred 1 matched GT 1 only through the IoU gate of the 100-px boxes shifted by 60 px
    assert keypoint_box_iou(pred[1], gt[1]) >= 0.1


def test_spectral_versus_frobenius_pair_error():
    gt = np.zeros((1, 2, 2))
    gt[0] = [[0, 0], [10, 10]]
    pred = gt + np.array([[1.0, 0.0], [0.0, 1.0]])  # difference = identity
    assert greedy_match_2d(pred, gt).costs[0].item() == pytest.approx(1.0)
    assert greedy_match_2d(pred, gt, pair_error="frobenius").costs[0].item() == pytest.approx(math.sqrt(2))


def test_empty_inputs():
    match = greedy_match_2d(np.zeros((0, 24, 2)), np.stack([person(0, 0)]))
    assert match.true_positives == 0 and match.misses.tolist() == [0]


def write_rh(root, annots):
    (root / "images").mkdir(parents=True, exist_ok=True)
    np.savez(root / "test_annots.npz", annots=np.array(annots, dtype=object))
    return root


def kp19(points, visible):
    return np.concatenate([points, np.asarray(visible, float)[:, None] * 2], axis=1)


def test_relative_human_reader_maps_to_crowdpose14(tmp_path):
    g = np.random.default_rng(0)
    bk = g.uniform(10, 200, (19, 2))
    och = g.uniform(10, 200, (19, 2))
    visible = np.ones(19)
    visible[7] = 0  # BK L_Elbow invisible
    annots = {
        "1234567.jpg": [{"bbox": [0, 0, 1, 1], "kp2d": kp19(bk, visible), "depth_id": 0, "age": 2},
                        {"bbox": [0, 0, 1, 1], "kp2d": None, "depth_id": 1, "age": 0}],
        "och_000001.jpg": [{"bbox": [0, 0, 1, 1], "kp2d": kp19(och, np.ones(19)), "depth_id": 1, "age": 1}],
    }
    images = {image.name: image for image in read_relative_human(write_rh(tmp_path, annots))}
    first = images["1234567.jpg"]
    assert first.keypoints.shape == (1, 14, 3) and first.indices.tolist() == [0] and first.ages.tolist() == [2]
    np.testing.assert_array_equal(first.keypoints[0, 0, :2], bk[5])  # L_Shoulder
    np.testing.assert_array_equal(first.keypoints[0, 12, :2], bk[0])  # Head_top
    assert first.keypoints[0, 2].tolist() == [-2, -2, 0], "an invisible joint becomes (-2, -2), not visible"
    assert (first.keypoints[0, 13] == -2).all(), "upstream has no Neck_LSP in the 19-point sets"
    second = images["och_000001.jpg"]
    np.testing.assert_array_equal(second.keypoints[0, 1, :2], och[0])  # R_Shoulder
    with pytest.raises(FileNotFoundError, match="val_annots.npz"):
        read_relative_human(tmp_path, "val")


def rh_image(keypoints, depth_ids, ages):
    from meshrec_mahmr.evaluation import RHImage

    keypoints = np.asarray(keypoints, dtype=np.float64)
    full = np.concatenate([keypoints, np.ones(keypoints.shape[:2] + (1,))], -1)
    return RHImage("x.jpg", None, full, np.asarray(depth_ids), np.asarray(ages), np.arange(len(keypoints)))


def test_relative_human_metrics_hand_computed():
    people = np.stack([person(0, 0, joints=14), person(300, 0, joints=14), person(600, 0, joints=14)])
    acc = RHAccumulator()
    # layers 0, 0, 1; depths 2.0, 2.1 (same layer, |dz| < 0.2), 3.0 (farther): 3 correct pairs
    acc.update(rh_image(people, [0, 0, 1], [0, 2, 0]), people, np.array([2.0, 2.1, 3.0]))
    # second image: one person, missed (prediction far away: one false positive); age kid
    acc.update(rh_image(people[:1], [0], [2]), people[:1] + 5000, np.array([1.0]))
    result = acc.compute()
    assert (result["true_positives"], result["false_positives"], result["misses"]) == (3, 1, 1)
    assert result["precision"] == pytest.approx(3 / 4) and result["recall"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(3 / (3 + 1))
    assert result["mPCKh"] == pytest.approx(1.0)
    assert result["PCRD_0.2"] == pytest.approx(3 / (3 + 0.3))
    # kid pairs: (0, 1) and (1, 2) involve person 1 (kid); one missed kid
    assert result["PCRD_0.2_kid"] == pytest.approx(2 / (2 + 0.3))
    assert result["PCRD_0.2_adult"] == pytest.approx(3 / 3)
    # upstream's formula: TP = predictions - misses = 4 - 1
    assert result["f1_upstream"] == pytest.approx(3 / (3 + 1))


def test_wrong_depth_order_is_counted():
    people = np.stack([person(0, 0, joints=14), person(300, 0, joints=14)])
    acc = RHAccumulator()
    acc.update(rh_image(people, [0, 1], [0, 0]), people, np.array([3.0, 2.0]))  # person 1 should be farther
    assert acc.compute()["PCRD_0.2"] == 0.0


def test_matched_errors_alignment():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(2, 24, 3, generator=g, dtype=torch.float64)
    shifted = gt + torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64)
    out = matched_errors(shifted, gt, shifted, gt)
    assert out["mpjpe"].abs().max() < 1e-9 and out["mve"].abs().max() < 1e-9
    angle = 0.7
    R = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
                     dtype=torch.float64)
    rotated = 1.3 * gt @ R.T
    out = matched_errors(rotated, gt)
    assert out["pa_mpjpe"].abs().max() < 1e-6 and out["mpjpe"].min() > 10


def test_pck3d_with_bone_rescaling():
    g = np.random.default_rng(1)
    gt = g.normal(0, 300, (17, 3))
    assert pck3d_bone_rescaled(2.5 * gt + 40, gt) == pytest.approx(1.0)  # bone lengths are rescaled
    assert pck3d_bone_rescaled(None, gt) == pytest.approx(0.0, abs=1e-8)  # upstream adds 1e-8 to the count
    bent = gt.copy()
    bent[4] += 400  # right wrist moved far away
    assert pck3d_bone_rescaled(bent, gt) == pytest.approx(13 / 14)
