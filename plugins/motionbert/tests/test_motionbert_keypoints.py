"""Normalisation, layouts, windows, flipping and translation, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec.rotations import rodrigues
from meshrec_motionbert.keypoints import (
    average_rotations,
    coco_to_h36m,
    flip_keypoints,
    flip_rotations,
    frame_owners,
    normalize,
    window_starts,
)
from meshrec_motionbert.method import estimate_translation


def _sequence():
    kp = np.zeros((2, 17, 3))
    kp[..., 2] = 1.0
    kp[0, :, 0], kp[0, :, 1] = 100.0, 200.0
    kp[1, :, 0], kp[1, :, 1] = 300.0, 250.0  # box x 100..300 (w 200), y 200..250 (h 50)
    kp[1, 3] = [1000.0, 1000.0, 0.0]  # unconfident: outside the box, ignored by it, clipped
    kp[0, 4, 2] = 1.7  # confidence above 1: clipped
    return kp


def test_bbox_normalisation_by_hand():
    out = normalize(_sequence(), "bbox")
    # s = 200, corner = ((100 + 300 - 200) / 2, (200 + 250 - 200) / 2) = (100, 125)
    assert out[0, 0, :2] == pytest.approx([(0 / 200 - 0.5) * 2, (75 / 200 - 0.5) * 2])  # (-1, -0.25)
    assert out[1, 0, :2] == pytest.approx([1.0, (125 / 200 - 0.5) * 2])  # (1, 0.25)
    assert out[1, 3].tolist() == [1.0, 1.0, 0.0]  # (1000, 1000) -> (9, 8.75), clipped to 1
    assert out[0, 4, 2] == 1.0


def test_image_normalisation_by_hand():
    out = normalize(_sequence(), "image", (640, 480))
    assert out[0, 0, :2] == pytest.approx([100 / 640 * 2 - 1, 200 / 640 * 2 - 480 / 640])
    assert out[1, 3, :2] == pytest.approx([1000 / 640 * 2 - 1, 1000 / 640 * 2 - 0.75])  # not clipped
    assert out[0, 4, 2] == 1.0


def test_normalisation_errors():
    with pytest.raises(ValueError, match="image size"):
        normalize(_sequence(), "image")
    few = _sequence()
    few[..., 2] = 0
    few[0, :1, 2] = 1
    with pytest.raises(ValueError, match="at least 4 keypoints"):
        normalize(few, "bbox")
    with pytest.raises(ValueError, match="'bbox' or 'image'"):
        normalize(_sequence(), "crop")


def test_coco_to_h36m():
    coco = np.random.default_rng(0).random((3, 17, 3))
    h36m = coco_to_h36m(coco)
    assert np.allclose(h36m[:, 0, :2], (coco[:, 11, :2] + coco[:, 12, :2]) / 2)
    assert np.allclose(h36m[:, 0, 2], np.minimum(coco[:, 11, 2], coco[:, 12, 2]))
    assert np.allclose(h36m[:, 8, :2], (coco[:, 5, :2] + coco[:, 6, :2]) / 2)
    assert np.allclose(h36m[:, 7, :2], (h36m[:, 0, :2] + h36m[:, 8, :2]) / 2)
    assert np.allclose(h36m[:, 10, :2], (coco[:, 1, :2] + coco[:, 2, :2]) / 2)
    assert np.allclose(h36m[:, [1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16]],
                       coco[:, [12, 14, 16, 11, 13, 15, 0, 5, 7, 9, 6, 8, 10]])


def test_windows_and_owners():
    assert window_starts(5, 8, 2) == [0]
    assert window_starts(20, 8, 2) == [0, 6, 12]
    assert window_starts(21, 8, 2) == [0, 6, 12, 13]
    owners = frame_owners(20, 8, [0, 6, 12])
    # overlap 6..7 split at its middle: 6 from window 0 (margins 1 vs 0), 7 from window 1
    assert owners.tolist() == [0] * 7 + [1] * 6 + [2] * 7
    with pytest.raises(ValueError, match="window_overlap"):
        window_starts(20, 8, 8)


def test_flip_keypoints_swaps_sides_and_negates_x():
    x = torch.rand(1, 2, 17, 3, dtype=torch.float64)
    flipped = flip_keypoints(x)
    assert torch.equal(flipped[..., 1, 0], -x[..., 4, 0]) and torch.equal(flipped[..., 14, 1], x[..., 11, 1])
    assert torch.equal(flipped[..., 0, 0], -x[..., 0, 0])
    assert torch.equal(flip_keypoints(flipped), x)


def test_flip_rotations_is_upstream_axis_angle_rule():
    axis_angle = torch.randn(3, 24, 3, dtype=torch.float64)
    flipped = flip_rotations(rodrigues(axis_angle))
    expected = axis_angle * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    order = list(range(24))
    for a, b in ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)):
        order[a], order[b] = b, a
    assert (flipped - rodrigues(expected[:, order])).abs().max() < 1e-12
    assert (flip_rotations(flipped) - rodrigues(axis_angle)).abs().max() < 1e-12


def test_average_of_two_rotations_is_the_geodesic_midpoint():
    base = rodrigues(torch.randn(5, 3, dtype=torch.float64))
    axis = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    angle = torch.rand(5, 1, dtype=torch.float64) * 2.5
    other = base @ rodrigues(axis * angle)
    middle = base @ rodrigues(axis * angle / 2)
    assert (average_rotations(base, other) - middle).abs().max() < 1e-10
    assert (average_rotations(base, base) - base).abs().max() < 1e-12


def test_translation_from_exact_projections():
    generator = torch.Generator().manual_seed(0)
    joints = torch.randn(4, 17, 3, generator=generator, dtype=torch.float64) * 0.4
    transl = torch.tensor([[0.3, -0.2, 4.0], [-1.0, 0.5, 7.0], [0.0, 0.0, 3.0], [2.0, 1.0, 10.0]], dtype=torch.float64)
    k = torch.tensor([[1200.0, 0, 640], [0, 1100.0, 360], [0, 0, 1]], dtype=torch.float64).expand(4, 3, 3)
    points = joints + transl[:, None]
    pixels = torch.einsum("bij,bkj->bki", k, points)
    keypoints = torch.cat([pixels[..., :2] / pixels[..., 2:], torch.rand(4, 17, 1, generator=generator,
                                                                        dtype=torch.float64) + 0.1], dim=-1)
    assert (estimate_translation(joints, keypoints, k) - transl).abs().max() < 1e-9
    keypoints[..., 2] = 0  # nothing confident: t = 0 rather than NaN
    assert torch.equal(estimate_translation(joints, keypoints, k), torch.zeros(4, 3, dtype=torch.float64))
    assert math.isfinite(float(estimate_translation(joints, keypoints, k).sum()))
