"""Shared building blocks of image methods: cameras, crops, 6D rotations, ResNet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec.camera import default_intrinsics, project, weak_perspective_to_translation
from meshrec.nn import IMAGENET_MEAN, IMAGENET_STD, crop_boxes, resnet50, square_boxes
from meshrec.rotations import (
    matrix_from_6d_prohmr,
    matrix_from_6d_pytorch3d,
    matrix_from_6d_spin,
    matrix_to_6d_prohmr,
    matrix_to_6d_pytorch3d,
    matrix_to_6d_spin,
    rodrigues,
)


def test_weak_perspective_translation_is_exact_on_the_body_plane():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.rand(50, 2, generator=generator, dtype=torch.float64) - 0.5,
                        torch.zeros(50, 1, dtype=torch.float64)], dim=1)
    camera = torch.tensor([0.8, 0.05, -0.1], dtype=torch.float64)
    centre, side = torch.tensor([410.0, 230.0], dtype=torch.float64), torch.tensor(300.0, dtype=torch.float64)
    K = torch.tensor([[1000.0, 0, 320], [0, 1100, 240], [0, 0, 1]], dtype=torch.float64)
    K[0, 0] = K[1, 1] = 1000.0  # one focal length, as the conversion assumes
    transl = weak_perspective_to_translation(camera, centre, side, K)
    weak = centre + camera[0] * side / 2 * (points[:, :2] + camera[1:])
    torch.testing.assert_close(project(points + transl, K), weak, atol=1e-9, rtol=0)
    # HMR's own crop camera: f = 5000 over a 224 crop centred on the principal point
    crop = weak_perspective_to_translation(camera, torch.tensor([112.0, 112.0]).double(), torch.tensor(224.0).double(),
                                           torch.tensor([[5000.0, 0, 112], [0, 5000, 112], [0, 0, 1]]).double())
    torch.testing.assert_close(crop, torch.tensor([0.05, -0.1, 2 * 5000 / (224 * 0.8)], dtype=torch.float64))


def test_degenerate_scale_stays_finite():
    transl = weak_perspective_to_translation(torch.tensor([[0.0, 0, 0], [-1.0, 0, 0]]), torch.zeros(2, 2),
                                             torch.ones(2), default_intrinsics(100, 100))
    assert torch.isfinite(transl).all() and (transl[:, 2] > 0).all()


def test_default_intrinsics():
    K = default_intrinsics(300, 400)
    assert K[0, 0] == K[1, 1] == 500.0 and K[0, 2] == 200.0 and K[1, 2] == 150.0


def reference_crop(image: np.ndarray, centre, side: float, size: int) -> np.ndarray:
    """OpenCV warpAffine semantics written out: output pixel (i, j) samples the source at
    centre + ((j, i) - size/2) * side/size with bilinear weights, zero outside."""
    height, width = image.shape[1:]
    out = np.zeros((image.shape[0], size, size))
    for i in range(size):
        for j in range(size):
            x = centre[0] + (j - size / 2) * side / size
            y = centre[1] + (i - size / 2) * side / size
            x0, y0 = math.floor(x), math.floor(y)
            for dy, wy in ((0, 1 - (y - y0)), (1, y - y0)):
                for dx, wx in ((0, 1 - (x - x0)), (1, x - x0)):
                    yy, xx = y0 + dy, x0 + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        out[:, i, j] += wy * wx * image[:, yy, xx]
    return out


@pytest.mark.parametrize("centre, side", [((20.3, 11.7), 13.0), ((2.0, 3.0), 20.0), ((29.5, 0.0), 9.0)])
def test_crop_matches_the_affine_warp_definition(centre, side):
    image = np.random.default_rng(0).uniform(0, 255, (3, 24, 32))
    crop = crop_boxes(torch.as_tensor(image), torch.tensor([centre]), torch.tensor([side]), size=16, normalise=False)
    np.testing.assert_allclose(crop[0].numpy(), reference_crop(image, centre, side, 16), atol=1e-3)


def test_crop_normalisation_and_boxes():
    image = torch.full((3, 10, 10), 128, dtype=torch.uint8)
    crop = crop_boxes(image, torch.tensor([[5.0, 5.0]]), torch.tensor([4.0]), size=4)
    expected = (128 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(crop[0, :, 1, 1], expected)
    centres, sides = square_boxes(torch.tensor([[10.0, 20, 30, 80]]), 1.25)
    torch.testing.assert_close(centres, torch.tensor([[20.0, 50.0]]))
    torch.testing.assert_close(sides, torch.tensor([75.0]))


def test_6d_layouts_store_the_documented_elements():
    matrix = torch.arange(9.0).view(3, 3)
    assert matrix_to_6d_spin(matrix).tolist() == [0, 1, 3, 4, 6, 7]
    assert matrix_to_6d_prohmr(matrix).tolist() == [0, 3, 6, 1, 4, 7]
    assert matrix_to_6d_pytorch3d(matrix).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("pair", [(matrix_from_6d_spin, matrix_to_6d_spin), (matrix_from_6d_prohmr, matrix_to_6d_prohmr),
                                  (matrix_from_6d_pytorch3d, matrix_to_6d_pytorch3d)])
def test_6d_round_trip_and_orthonormalisation(pair):
    from_6d, to_6d = pair
    rotations = rodrigues(torch.randn(100, 3, dtype=torch.float64))
    torch.testing.assert_close(from_6d(to_6d(rotations)), rotations)
    noisy = from_6d(to_6d(rotations) + 0.1 * torch.randn(100, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(noisy @ noisy.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(noisy), torch.ones(100, dtype=torch.float64))


def test_6d_layouts_are_not_interchangeable():
    rotations = rodrigues(torch.randn(10, 3, dtype=torch.float64))
    assert not torch.allclose(matrix_from_6d_prohmr(matrix_to_6d_spin(rotations)), rotations, atol=1e-3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        matrix_from_6d_spin(torch.zeros(3, 5))


def test_resnet50_structure():
    network = resnet50()
    names = list(network.state_dict())
    assert len(names) == 318 and names[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer1.0.downsample.0.weight" in names and "layer4.2.bn3.num_batches_tracked" in names
    assert "fc.weight" not in names and "fc.weight" in resnet50(num_classes=1000).state_dict()
    assert sum(p.numel() for p in network.parameters()) == 23_508_032
    assert network.layer2[0].conv2.stride == (2, 2) and network.layer2[0].conv1.stride == (1, 1)  # v1.5
    assert network(torch.zeros(1, 3, 224, 224)).shape == (1, 2048, 7, 7)


def test_matrix_to_axis_angle_inverts_rodrigues_everywhere():
    from meshrec.rotations import matrix_to_axis_angle

    generator = torch.Generator().manual_seed(3)
    axes = torch.nn.functional.normalize(torch.randn(600, 3, generator=generator, dtype=torch.float64), dim=-1)
    special = torch.tensor([0.0, 1e-9, 1e-5, 1e-3, math.pi - 1e-3, math.pi - 1e-6, math.pi], dtype=torch.float64)
    angles = torch.cat([torch.rand(300, generator=generator, dtype=torch.float64) * math.pi, special.repeat(43)[:300]])
    axis_angle = axes * angles[:, None]
    recovered = matrix_to_axis_angle(rodrigues(axis_angle))
    torch.testing.assert_close(rodrigues(recovered), rodrigues(axis_angle), atol=1e-9, rtol=0)
    below_pi = angles < math.pi - 1e-3
    torch.testing.assert_close(recovered[below_pi], axis_angle[below_pi], atol=1e-8, rtol=0)
    assert (recovered.norm(dim=-1) <= math.pi + 1e-12).all()
