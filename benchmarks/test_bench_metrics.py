"""Metrics ops against their alternatives, same run: PA-MPJPE (10,000 x 14 joints) against the
per-sample numpy loop of SPIN / mmhuman3d and a batched torch.linalg.svd version; the inside-mesh
test of a 6890-vertex body against 100k scene points, and nearest-scene-point distances of 6890
vertices against 1M points, against the pure-PyTorch references.

The references are brute force (a minute or more at full size): they run one round. Under
``--benchmark-disable`` (the CI smoke run) the scene sizes shrink so the run stays short.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshrec.metrics import pa_mpjpe
from meshrec.ops import nearest_points, reference, winding_number
from meshrec.testing import synthetic_smpl_arrays
from meshrec.testing.fixtures import DEVICES

PA_SAMPLES, PA_JOINTS = 10_000, 14


def numpy_loop_pa_mpjpe(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The per-sample loop of SPIN's / mmhuman3d's compute_similarity_transform."""
    errors = np.empty(len(pred))
    for i, (p, g) in enumerate(zip(pred, target)):
        mu1, mu2 = p.mean(0), g.mean(0)
        x1, x2 = (p - mu1).T, (g - mu2).T
        K = x1 @ x2.T
        U, _, Vh = np.linalg.svd(K)
        V = Vh.T
        Z = np.eye(3)
        Z[-1, -1] = np.sign(np.linalg.det(U @ V.T))
        R = V @ Z @ U.T
        scale = np.trace(R @ K) / (x1**2).sum()
        aligned = (scale * R @ p.T + (mu2 - scale * R @ mu1)[:, None]).T
        errors[i] = np.linalg.norm(aligned - g, axis=-1).mean()
    return errors


def torch_svd_pa_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The usual batched PyTorch version (VIBE's batch_compute_similarity_transform_torch, with
    the trace batched): torch.linalg.svd of the 3x3 cross-covariances."""
    mu1, mu2 = pred.mean(1, keepdim=True), target.mean(1, keepdim=True)
    x1, x2 = pred - mu1, target - mu2
    K = x1.transpose(1, 2) @ x2
    U, _, Vh = torch.linalg.svd(K)
    V = Vh.transpose(1, 2)
    Z = torch.ones(pred.shape[0], 3, dtype=pred.dtype, device=pred.device)
    Z[:, -1] = torch.sign(torch.linalg.det(U @ Vh))
    R = (V * Z[:, None, :]) @ U.transpose(1, 2)
    scale = (R * K.transpose(1, 2)).sum((1, 2)) / x1.square().sum((1, 2))
    t = mu2 - scale[:, None, None] * (mu1 @ R.transpose(1, 2))
    aligned = scale[:, None, None] * (pred @ R.transpose(1, 2)) + t
    return torch.linalg.vector_norm(aligned - target, dim=-1).mean(-1)


PA_IMPLEMENTATIONS = {
    "meshrec": lambda p, g: pa_mpjpe(p, g),
    "reference": lambda p, g: torch.linalg.vector_norm(reference.procrustes(p, g)[0] - g, dim=-1).mean(-1),
    "torch-svd": torch_svd_pa_mpjpe,
    "numpy-loop": lambda p, g: torch.from_numpy(numpy_loop_pa_mpjpe(p.cpu().numpy(), g.cpu().numpy())),
}


@pytest.fixture(scope="module")
def pa_data():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(PA_SAMPLES, PA_JOINTS, 3, generator=g, dtype=torch.float64) * 0.3
    target = pred + 0.05 * torch.randn(PA_SAMPLES, PA_JOINTS, 3, generator=g, dtype=torch.float64)
    return pred, target


@pytest.mark.benchmark(group="pa-mpjpe-10000x14")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("implementation", list(PA_IMPLEMENTATIONS))
def test_pa_mpjpe(timed, pa_data, implementation, dtype, device):
    if implementation == "numpy-loop" and (device != "cpu" or dtype != torch.float64):
        pytest.skip("the numpy loop runs on the CPU in float64")
    pred, target = (t.to(device, dtype) for t in pa_data)
    errors = timed(PA_IMPLEMENTATIONS[implementation], pred, target)
    expected = torch.from_numpy(numpy_loop_pa_mpjpe(pa_data[0][:500].numpy(), pa_data[1][:500].numpy()))
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(errors[:500].cpu().double(), expected, atol=tolerance, rtol=0)


@pytest.mark.benchmark(group="pa-mpjpe-loss-10000x14")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ["meshrec", "reference", "torch-svd"])
def test_pa_mpjpe_forward_backward(timed, pa_data, implementation, device):
    pred, target = (t.to(device, torch.float32) for t in pa_data)
    leaf = pred.clone().requires_grad_()

    def step():
        (grad,) = torch.autograd.grad(PA_IMPLEMENTATIONS[implementation](leaf, target).mean(), leaf)
        return grad

    grad = timed(step)
    check = pred[:200].double().requires_grad_()
    (expected,) = torch.autograd.grad(pa_mpjpe(check, target[:200].double()).sum() / PA_SAMPLES, check)
    torch.testing.assert_close(grad[:200].double(), expected, atol=1e-4, rtol=1e-3)


@pytest.fixture(scope="module")
def body():
    arrays = synthetic_smpl_arrays()
    return torch.tensor(arrays["v_template"]), torch.tensor(arrays["f"].astype(np.int64))


def smoke_run(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", False))


@pytest.mark.benchmark(group="inside-mesh-6890-vs-100k")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ["meshrec", "reference"])
def test_inside_mesh(request, timed, body, implementation, device):
    vertices, faces = (t.to(device) for t in body)
    count = 2_000 if smoke_run(request) else 100_000
    g = torch.Generator().manual_seed(1)
    lower, upper = body[0].amin(0) - 0.5, body[0].amax(0) + 0.5  # a scene crop around the body
    points = (lower + (upper - lower) * torch.rand(count, 3, generator=g, dtype=torch.float64)).to(device)
    if implementation == "meshrec":
        winding = timed(winding_number, points, vertices, faces)
    else:
        winding = timed(lambda: reference.winding_number(points[None], vertices[None], faces)[0], rounds=1)
    check = slice(0, count, 97)
    expected = reference.winding_number(points[None, check], vertices[None], faces)[0].round()
    torch.testing.assert_close(winding[check].round(), expected)


def room_scene(count: int, generator: torch.Generator) -> torch.Tensor:
    """A 6 x 6 x 2.5 m room: floor, four walls and a table-sized box, sampled on their surfaces."""
    per = count // 7
    box = torch.tensor([6.0, 2.5, 6.0], dtype=torch.float64)
    corner = torch.tensor([-3.0, 0.0, -3.0], dtype=torch.float64)
    floor = corner + box * torch.rand(2 * per, 3, generator=generator, dtype=torch.float64)
    floor[:, 1] = 0.0
    parts = [floor]
    for axis, side in ((0, -3.0), (0, 3.0), (2, -3.0), (2, 3.0)):
        wall = corner + box * torch.rand(per, 3, generator=generator, dtype=torch.float64)
        wall[:, axis] = side
        parts.append(wall)
    rest = count - 6 * per
    table = torch.tensor([0.8, 0.0, -2.0], dtype=torch.float64) + torch.tensor(
        [1.2, 0.75, 0.8], dtype=torch.float64) * torch.rand(rest, 3, generator=generator, dtype=torch.float64)
    parts.append(table)
    return torch.cat(parts)


@pytest.mark.benchmark(group="nearest-point-6890-vs-1M")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ["meshrec", "reference"])
def test_nearest_scene_point(request, timed, body, implementation, device):
    g = torch.Generator().manual_seed(2)
    count = 20_000 if smoke_run(request) else 1_000_000
    scene = room_scene(count, g).to(device)
    vertices = (body[0] + torch.tensor([0.0, 1.17, 0.0], dtype=torch.float64)).to(device)  # standing on the floor
    if implementation == "meshrec":
        distance, index = timed(nearest_points, vertices, scene)
    else:
        distance, index = timed(lambda: reference.nearest_points(vertices[None], scene[None]), rounds=1)
        distance, index = distance[0], index[0]
    check = slice(0, vertices.shape[0], 211)
    expected = torch.cdist(vertices[check], scene, compute_mode="donot_use_mm_for_euclid_dist").amin(-1)
    torch.testing.assert_close(distance[check], expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.linalg.vector_norm(vertices - scene[index], dim=-1), distance)
