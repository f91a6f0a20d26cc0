"""The camera model: FoV -> intrinsics and the metric translation, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from meshrec_mahmr.model import MAHMRNetwork, intrinsics_from_fov, metric_translation


def test_focal_from_fov_hand_computed():
    # tan(fov / 2) = 0.5 -> f = H / (2 * 0.5) = H
    K = intrinsics_from_fov(torch.tensor([2 * math.atan(0.5)], dtype=torch.float64),
                            torch.tensor([966.0], dtype=torch.float64), torch.tensor([1288.0], dtype=torch.float64))
    expected = torch.tensor([[966.0, 0, 644], [0, 966, 483], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(K[0], expected, rtol=0, atol=1e-12)
    # below 0.08 rad the FoV is clamped: f = 1000 / (2 tan 0.04) = 12493.3326
    K = intrinsics_from_fov(torch.tensor([0.01], dtype=torch.float64), torch.tensor([1000.0], dtype=torch.float64),
                            torch.tensor([800.0], dtype=torch.float64))
    assert K[0, 0, 0].item() == pytest.approx(12493.332622, abs=1e-5)


@pytest.mark.parametrize("c_s, s", [(0.0, 1.000001), (math.log(3.0), 1.500001)])
def test_metric_translation_hand_computed(c_s, s):
    cam = torch.tensor([[0.2, -0.4, c_s]], dtype=torch.float64)
    t = metric_translation(cam, torch.tensor([966.0], dtype=torch.float64), 1288)
    # s = 2 sigmoid(c_s) + 1e-6; t_xy = c_xy / s; t_z = 2 f / (s 1288) = 1.5 / s for f = 966
    torch.testing.assert_close(t[0], torch.tensor([0.2 / s, -0.4 / s, 1.5 / s], dtype=torch.float64), rtol=0, atol=1e-12)


def test_fixed_fov_intrinsics_of_sathmr():
    network = MAHMRNetwork("sat_644", embed_dim=32, depth=3, num_heads=2, hidden_dim=32, dec_layers=1,
                           dim_feedforward=32, num_queries=2)
    K = network.intrinsics(torch.tensor([[966.0, 1288.0]]), None)
    # 60 degree vertical FoV on the 1288 square: f = 1288 / (2 tan 30 deg) = 1115.44; centre of 1288 x 966
    assert K[0, 0, 0].item() == pytest.approx(1288 / (2 * math.tan(math.pi / 6)), abs=1e-3)
    assert K[0, 0, 2].item() == pytest.approx(644) and K[0, 1, 2].item() == pytest.approx(483)
