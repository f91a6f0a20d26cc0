"""The metrics ops: Procrustes, SDF sampling, winding numbers and nearest points, against numpy
oracles, the pure-PyTorch references and upstream conventions (F.grid_sample); gradients, op
checks, torch.compile, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_oracles as oracle
from meshrec.ops import (
    check_closed_mesh,
    nearest_points,
    points_inside_mesh,
    ProcrustesResult,
    procrustes,
    reference,
    sample_sdf,
    winding_number,
)
from meshrec.testing import synthetic_smpl_arrays
from meshrec.testing.fixtures import DEVICES

DTYPES = [torch.float32, torch.float64]


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q = torch.nn.functional.normalize(torch.randn(4, generator=generator, dtype=torch.float64), dim=0)
    w, x, y, z = q
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
    ])


def procrustes_cases(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 14, 3) source/target pairs: random, mirrored, exact similarities, and degenerate sets."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randn(64, 14, 3, generator=g, dtype=torch.float64)
    target = torch.randn(64, 14, 3, generator=g, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    target[1] = source[1] @ mirror  # pure reflection
    target[2] = 0.7 * source[2] @ mirror + 0.05 * target[2]
    for k in range(3, 8):  # exact similarities
        target[k] = 2.5 * k * source[k] @ random_rotation(g).T + torch.randn(3, generator=g, dtype=torch.float64)
    direction = torch.randn(3, generator=g, dtype=torch.float64)
    line = torch.randn(14, 1, generator=g, dtype=torch.float64)
    source[8] = line * direction  # collinear source
    source[9], target[9] = line * direction, torch.randn(14, 1, generator=g, dtype=torch.float64) * direction.flip(0) + 1
    source[10] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # all source points equal
    target[11] = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)  # all target points equal
    source[12, :, 2] = 0.0  # coplanar source
    target[12, :, 2] = 0.0
    source[13] = source[13] * 1e-3 + 1e3  # small spread far from the origin
    target[13] = 3 * source[13] @ random_rotation(g).T
    return source, target


# ---- Procrustes against the numpy per-sample oracle


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weighted", [False, True])
def test_procrustes_matches_numpy_loop(device, weighted):
    source, target = procrustes_cases()
    weights = None
    if weighted:
        weights = torch.rand(source.shape[:2], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        weights[20] = 0.0  # no weight at all: identity
        weights[21, 3:] = 0.0  # three points only
    result = procrustes(source.to(device), target.to(device), None if weights is None else weights.to(device))
    for i in range(source.shape[0]):
        aligned, scale, rotation, translation = oracle.similarity_transform(
            source[i].numpy(), target[i].numpy(), None if weights is None else weights[i].numpy())
        np.testing.assert_allclose(result.aligned[i].cpu().numpy(), aligned, atol=1e-9, rtol=0, err_msg=f"sample {i}")
        np.testing.assert_allclose(result.scale[i].item(), scale, atol=1e-9, rtol=1e-9)
        if i not in (8, 9):  # collinear: the rotation about the line is not determined
            np.testing.assert_allclose(result.rotation[i].cpu().numpy(), rotation, atol=1e-9, rtol=0)
            np.testing.assert_allclose(result.translation[i].cpu().numpy(), translation, atol=1e-7, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_procrustes_exact_similarity_has_zero_error(device):
    g = torch.Generator().manual_seed(1)
    source = torch.randn(100, 24, 3, generator=g, dtype=torch.float64)
    target = torch.stack([
        (0.5 + i / 50) * source[i] @ random_rotation(g).T + torch.randn(3, generator=g, dtype=torch.float64)
        for i in range(100)
    ])
    result = procrustes(source.to(device), target.to(device))
    assert (result.aligned.cpu() - target).abs().max() < 1e-12
    torch.testing.assert_close(torch.linalg.det(result.rotation.cpu()), torch.ones(100, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_procrustes_reflection_is_fixed(device):
    g = torch.Generator().manual_seed(2)
    source = torch.randn(50, 10, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    target = source * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    result = procrustes(source.to(device), target.to(device))
    torch.testing.assert_close(torch.linalg.det(result.rotation.cpu()), torch.ones(50, dtype=torch.float64))
    errors = torch.linalg.vector_norm(result.aligned.cpu() - target, dim=-1).mean(-1)
    expected = oracle.pa_errors(source.numpy(), target.numpy()).mean(-1)
    np.testing.assert_allclose(errors.numpy(), expected, atol=1e-12, rtol=0)
    assert (errors > 0).all()  # a mirror is not a rotation


def test_procrustes_degenerate_inputs_are_finite_and_documented():
    source, target = procrustes_cases()
    result = procrustes(source, target)
    for field in result:
        assert torch.isfinite(field).all()
    # all source points equal: scale 0, every point on the target centroid
    assert result.scale[10] == 0
    torch.testing.assert_close(result.aligned[10], target[10].mean(0).expand(14, 3))
    # all target points equal: identity rotation, scale 0
    torch.testing.assert_close(result.rotation[11], torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(result.aligned[11], target[11])
    # zero weights: identity transform
    zero = procrustes(source[:2], target[:2], torch.zeros(2, 14, dtype=torch.float64))
    torch.testing.assert_close(zero.aligned, source[:2])
    torch.testing.assert_close(zero.scale, torch.ones(2, dtype=torch.float64))


def test_procrustes_single_and_two_points():
    one = procrustes(torch.randn(3, 1, 3, dtype=torch.float64), torch.randn(3, 1, 3, dtype=torch.float64))
    assert torch.isfinite(one.aligned).all()
    source, target = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(5, 2, 3, dtype=torch.float64)
    two = procrustes(source, target)
    for i in range(5):
        np.testing.assert_allclose(two.aligned[i].numpy(), oracle.similarity_transform(source[i].numpy(), target[i].numpy())[0],
                                   atol=1e-10)


def test_procrustes_rigid_mode_keeps_scale_one():
    source, target = procrustes_cases()
    result = procrustes(source, target, scaling=False)
    assert (result.scale == 1).all()
    for i in (0, 1, 3):
        np.testing.assert_allclose(result.aligned[i].numpy(),
                                   oracle.similarity_transform(source[i].numpy(), target[i].numpy(), scaling=False)[0],
                                   atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_procrustes_float32_close_to_float64(device):
    source, target = procrustes_cases()
    result = procrustes(source.float().to(device), target.float().to(device))
    expected = procrustes(source, target)
    torch.testing.assert_close(result.aligned.cpu().double()[:13], expected.aligned[:13], atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape", [(0, 14, 3), (14, 3), (2, 3, 5, 3), (4, 0, 3)])
def test_procrustes_any_leading_shape_and_empty(shape):
    source, target = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    result = procrustes(source, target)
    expected = reference.procrustes(source, target)
    assert result.aligned.shape == shape and result.rotation.shape == (*shape[:-2], 3, 3)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want)


def test_procrustes_non_contiguous_and_bool_weights():
    source = torch.randn(6, 14, 6, dtype=torch.float64)[..., ::2]
    target = torch.randn(6, 14, 3, dtype=torch.float64)
    mask = torch.rand(6, 14) > 0.3
    result = procrustes(source, target, mask)
    expected = reference.procrustes(source.contiguous(), target, mask.double())
    torch.testing.assert_close(result.aligned, expected[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_procrustes_matches_reference(compiled, device, dtype):
    source, target = procrustes_cases()
    weights = torch.rand(source.shape[:2], dtype=torch.float64)
    args = [t.to(device, dtype) for t in (source, target, weights)]
    # float32: the reference computes in float32, the kernel in float64 (sample 13 sits at 1e3).
    tolerance, relative = (1e-10, 0.0) if dtype == torch.float64 else (5e-5, 1e-5)
    got, want = procrustes(*args), reference.procrustes(*args)
    torch.testing.assert_close(got.aligned, want[0], atol=tolerance, rtol=relative)
    torch.testing.assert_close(got.scale, want[1], atol=tolerance, rtol=max(relative, tolerance))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [procrustes, reference.procrustes], ids=["op", "reference"])
def test_procrustes_gradcheck(device, fn):
    g = torch.Generator().manual_seed(4)
    source = torch.randn(4, 6, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    target = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    target[1] = source[1].detach() * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) + 0.1 * target[1]
    target = target.to(device).requires_grad_()
    weights = (torch.rand(4, 6, generator=g, dtype=torch.float64) + 0.1).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y, w: tuple(fn(x, y, w)), (source, target, weights))
    assert torch.autograd.gradcheck(lambda x, y: tuple(fn(x, y, None, False)), (source, target))


@pytest.mark.parametrize("device", DEVICES)
def test_procrustes_backward_matches_reference(compiled, device):
    source, target = procrustes_cases(seed=5)
    # Well conditioned, nonzero residuals (3..7 fit exactly: the residual norm is not differentiable
    # at 0; 13, a 1e-3 spread at 1e3, loses 6 digits to centring).
    keep = [0, 1, 2, 12]
    source, target = source[keep].to(device), target[keep].to(device)
    weights = torch.rand(source.shape[:2], dtype=torch.float64, device=device)
    grads = [torch.randn(t.shape, dtype=torch.float64, device=device) for t in procrustes(source, target)]
    leaves = [t.clone().requires_grad_() for t in (source, target, weights)]
    got = torch.autograd.grad(procrustes(*leaves), leaves, grads)
    leaves = [t.clone().requires_grad_() for t in (source, target, weights)]
    want = torch.autograd.grad(reference.procrustes(*leaves), leaves, grads)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-9 * b.abs().max().item(), rtol=1e-7)


def test_procrustes_gradient_is_finite_on_degenerate_sets():
    source, target = procrustes_cases()
    source.requires_grad_()
    for fn in (procrustes, reference.procrustes):
        (grad,) = torch.autograd.grad(torch.linalg.vector_norm(fn(source, target)[0] - target, dim=-1).sum(), source)
        assert torch.isfinite(grad).all()


def test_procrustes_double_backward_raises(compiled):
    source = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(procrustes(source, torch.randn(2, 5, 3, dtype=torch.float64)).aligned.sum(), source,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        grad.sum().backward()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.data())
def test_property_procrustes_on_lattice_points(count, data):
    """Integer-lattice points make degeneracies exact (duplicates, collinear, coplanar sets)."""
    coords = st.lists(st.integers(-4, 4), min_size=3 * count, max_size=3 * count)
    source = torch.tensor(data.draw(coords), dtype=torch.float64).view(1, count, 3) / 2
    target = torch.tensor(data.draw(coords), dtype=torch.float64).view(1, count, 3) / 2
    result = procrustes(source, target)
    assert all(torch.isfinite(t).all() for t in result)
    x, y = source[0].numpy(), target[0].numpy()
    aligned, scale, rotation, _ = oracle.similarity_transform(x, y)
    K = (x - x.mean(0)).T @ (y - y.mean(0))
    unique = np.linalg.matrix_rank(K) >= 2 or np.linalg.matrix_rank(x - x.mean(0)) <= 1
    if unique:
        np.testing.assert_allclose(result.aligned[0].numpy(), aligned, atol=1e-9, rtol=0)
    else:
        # A collinear target with a spread-out source: every rotation mapping the source's
        # principal direction onto the line is optimal. Same optimum; meshrec's is the smallest.
        residual = ((result.aligned[0].numpy() - y) ** 2).sum()
        np.testing.assert_allclose(residual, ((aligned - y) ** 2).sum(), atol=1e-9, rtol=1e-9)
        angle = np.arccos(np.clip((np.trace(result.rotation[0].numpy()) - 1) / 2, -1, 1))
        assert angle <= np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)) + 1e-9
    np.testing.assert_allclose(result.scale.item(), scale, atol=1e-9)
    reference_result = reference.procrustes(source, target)
    torch.testing.assert_close(result.aligned, reference_result[0], atol=1e-9, rtol=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False), min_size=6, max_size=60))
def test_property_procrustes_never_nan(values):
    count = len(values) // 6
    source = torch.tensor(values[: 3 * count], dtype=torch.float64).view(1, count, 3)
    target = torch.tensor(values[3 * count : 6 * count], dtype=torch.float64).view(1, count, 3)
    for fn in (procrustes, reference.procrustes):
        assert all(torch.isfinite(t).all() for t in fn(source, target))


def test_procrustes_huge_batch():
    source, target = torch.randn(200_000, 14, 3), torch.randn(200_000, 14, 3)
    result = procrustes(source, target)
    picks = slice(None, None, 9973)
    torch.testing.assert_close(result.aligned[picks], reference.procrustes(source[picks], target[picks])[0],
                               atol=5e-5, rtol=0)


def test_procrustes_nan_stays_in_its_sample():
    source, target = torch.randn(3, 5, 3, dtype=torch.float64), torch.randn(3, 5, 3, dtype=torch.float64)
    source[1, 2, 0] = float("nan")
    result = procrustes(source, target)
    assert torch.isnan(result.aligned[1]).any()
    assert torch.isfinite(result.aligned[[0, 2]]).all()


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((torch.randn(4, 3), torch.randn(5, 3)), ValueError, "same shape"),
        ((torch.randn(4, 2), torch.randn(4, 2)), ValueError, r"\(\.\.\., N, 3\)"),
        ((torch.randn(3), torch.randn(3)), ValueError, r"\(\.\.\., N, 3\)"),
        ((torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)), TypeError, "same dtype"),
        ((torch.randint(0, 3, (4, 3)), torch.randint(0, 3, (4, 3))), TypeError, "float32 or float64"),
        ((np.zeros((4, 3)), torch.randn(4, 3)), TypeError, "torch.Tensor"),
        ((torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.ones(2, 3)), ValueError, r"weights must have shape"),
    ],
)
def test_procrustes_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        procrustes(*args)


def test_compiled_procrustes_checks_its_arguments(compiled):
    with pytest.raises(RuntimeError, match="same shape"):
        torch.ops.meshrec.procrustes(torch.randn(2, 4, 3), torch.randn(2, 5, 3), None, True)
    with pytest.raises(RuntimeError, match="weights must have shape"):
        torch.ops.meshrec.procrustes(torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.ones(4), True)
    with pytest.raises(RuntimeError, match="grad_scale must have shape"):
        torch.ops.meshrec.procrustes_backward(torch.randn(2, 4, 3), torch.randn(3), torch.randn(2, 3, 3),
                                              torch.randn(2, 3), None, torch.randn(2, 4, 3), torch.randn(2, 4, 3), None, True)
    with pytest.raises(RuntimeError, match="grad_residual must have shape"):
        torch.ops.meshrec.procrustes_backward(None, None, None, None, torch.randn(2, 3), torch.randn(2, 4, 3),
                                              torch.randn(2, 4, 3), None, True)


# ---- SDF sampling (the PROX / SA-HMR convention)


def sdf_case(dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(6)
    sdf = torch.randn(6, 7, 8, generator=g, dtype=torch.float64)
    grid_min, grid_max = [-1.0, 0.0, 0.5], [1.0, 2.5, 1.5]
    lower, upper = torch.tensor(grid_min, dtype=torch.float64), torch.tensor(grid_max, dtype=torch.float64)
    points = lower + (upper - lower) * (torch.rand(2000, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2)
    return sdf.to(device, dtype), grid_min, grid_max, points.to(device, dtype)


def sahmr_grid_sample(points, sdf, grid_min, grid_max):
    """SA-HMR's tools/eval_results.py expression."""
    lower = torch.tensor(grid_min, dtype=points.dtype, device=points.device)
    upper = torch.tensor(grid_max, dtype=points.dtype, device=points.device)
    normalised = ((points - lower) / (upper - lower) * 2 - 1)[None]
    return torch.nn.functional.grid_sample(
        sdf[None, None], normalised[:, :, [2, 1, 0]].view(1, 1, 1, -1, 3), padding_mode="border", align_corners=True
    ).reshape(-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_sdf_matches_sahmr_grid_sample(device, dtype):
    sdf, grid_min, grid_max, points = sdf_case(dtype, device)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(sample_sdf(points, sdf, grid_min, grid_max),
                               sahmr_grid_sample(points, sdf, grid_min, grid_max), atol=tolerance, rtol=0)


def test_sample_sdf_matches_numpy_trilinear():
    sdf, grid_min, grid_max, points = sdf_case()
    expected = [oracle.trilinear(sdf.numpy(), grid_min, grid_max, p) for p in points[:300].numpy()]
    np.testing.assert_allclose(sample_sdf(points[:300], sdf, grid_min, grid_max).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_sdf_matches_reference_and_gradients(compiled, device):
    sdf, grid_min, grid_max, points = sdf_case(device=device)
    torch.testing.assert_close(sample_sdf(points, sdf, grid_min, grid_max), reference.sample_sdf(points, sdf, grid_min, grid_max))
    leaf_a, leaf_b = points.clone().requires_grad_(), points.clone().requires_grad_()
    grad = torch.randn(points.shape[0], dtype=torch.float64, device=device)
    (a,) = torch.autograd.grad(sample_sdf(leaf_a, sdf, grid_min, grid_max), leaf_a, grad)
    (b,) = torch.autograd.grad(reference.sample_sdf(leaf_b, sdf, grid_min, grid_max), leaf_b, grad)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_sdf_gradcheck(device):
    sdf, grid_min, grid_max, points = sdf_case(device=device)
    inside = points[:20].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: sample_sdf(p, sdf, grid_min, grid_max), (inside,))
    assert torch.autograd.gradcheck(lambda p: reference.sample_sdf(p, sdf, grid_min, grid_max), (inside,))


def test_sample_sdf_gradient_matches_grid_sample():
    sdf, grid_min, grid_max, points = sdf_case()
    a, b = points.clone().requires_grad_(), points.clone().requires_grad_()
    (ga,) = torch.autograd.grad(sample_sdf(a, sdf, grid_min, grid_max).sum(), a)
    (gb,) = torch.autograd.grad(sahmr_grid_sample(b, sdf, grid_min, grid_max).sum(), b)
    torch.testing.assert_close(ga, gb, atol=1e-10, rtol=0)


def test_sample_sdf_shapes_nan_and_errors():
    sdf, grid_min, grid_max, points = sdf_case()
    assert sample_sdf(points.view(2, 1000, 3), sdf, grid_min, grid_max).shape == (2, 1000)
    assert sample_sdf(points[:0], sdf, grid_min, grid_max).shape == (0,)
    nan = points[:3].clone()
    nan[1, 2] = float("nan")
    values = sample_sdf(nan, sdf, grid_min, grid_max)
    assert torch.isnan(values[1]) and torch.isfinite(values[[0, 2]]).all()
    assert sample_sdf(points[:5].float(), sdf, grid_min, grid_max).dtype == torch.float32
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_sdf(points, sdf[:1], grid_min, grid_max)
    with pytest.raises(ValueError, match="grid_max > grid_min"):
        sample_sdf(points, sdf, grid_max, grid_min)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        sample_sdf(points[:, :2], sdf, grid_min, grid_max)


def test_sample_sdf_grid_gradient_needs_reference(compiled):
    sdf, grid_min, grid_max, points = sdf_case()
    with pytest.raises(ValueError, match="detach the sdf"):
        sample_sdf(points, sdf.clone().requires_grad_(), grid_min, grid_max)
    grid = sdf.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: reference.sample_sdf(points[:10], s, grid_min, grid_max), (grid,))


# ---- winding numbers


def box_mesh(lower, upper, first: int = 0):
    corners = torch.tensor([[upper[i] if (c >> i) & 1 else lower[i] for i in range(3)] for c in range(8)], dtype=torch.float64)
    quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]]
    faces = torch.tensor([[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads]) + first
    return corners, faces


def overlapping_boxes():
    a_vertices, a_faces = box_mesh([0, 0, 0], [2, 2, 2])
    b_vertices, b_faces = box_mesh([1, 1, 1], [3, 3, 3], first=8)
    return torch.cat([a_vertices, b_vertices]), torch.cat([a_faces, b_faces])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winding_number_of_overlapping_boxes(device, dtype):
    vertices, faces = overlapping_boxes()
    g = torch.Generator().manual_seed(7)
    points = torch.rand(5000, 3, generator=g, dtype=torch.float64) * 4 - 0.5
    expected = (((points > 0) & (points < 2)).all(-1).double() + ((points > 1) & (points < 3)).all(-1).double())
    winding = winding_number(points.to(device, dtype), vertices.to(device, dtype), faces.to(device))
    torch.testing.assert_close(winding.cpu().double(), expected)
    inside = points_inside_mesh(points.to(device, dtype), vertices.to(device, dtype), faces.to(device))
    torch.testing.assert_close(inside.cpu(), expected > 0)


def octahedron():
    vertices = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return vertices, faces


def test_winding_rays_through_edges_and_vertices_count_once():
    """Upward rays through shared edges and vertices of the triangulation (the box quads'
    diagonals x = y, the octahedron's apex and ridges x = 0 / y = 0) are counted once."""
    vertices, faces = overlapping_boxes()
    t = torch.tensor([0.25, 0.5, 0.75, 1.25, 1.5, 1.75, 2.25, 2.5, 2.75], dtype=torch.float64)
    points = torch.cat([torch.stack([t, t, torch.full_like(t, z)], 1) for z in (0.5, 1.5, 2.5)])
    expected = ((points > 0) & (points < 2)).all(-1).double() + ((points > 1) & (points < 3)).all(-1).double()
    torch.testing.assert_close(winding_number(points, vertices, faces), expected)
    vertices, faces = octahedron()
    s = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64)
    zero = torch.zeros_like(s)
    points = torch.cat([
        torch.stack([zero, zero, s], 1),                 # through the apexes
        torch.stack([s * 0.5, zero, s * 0.4], 1),        # through the ridges y = 0
        torch.stack([zero, s * 0.5, -s * 0.4], 1),       # and x = 0
        torch.tensor([[0.0, 0.0, 1.5], [0.0, 0.0, -1.5], [0.9, 0.0, 0.2], [0.0, -0.7, 0.31]], dtype=torch.float64),
    ])
    expected = (points.abs().sum(-1) < 1).double()
    torch.testing.assert_close(winding_number(points, vertices, faces), expected)
    torch.testing.assert_close(reference.winding_number(points[None], vertices[None], faces)[0], expected)


@pytest.fixture(scope="module")
def mannequin():
    arrays = synthetic_smpl_arrays()
    return torch.tensor(arrays["v_template"]), torch.tensor(arrays["f"].astype(np.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_winding_number_of_the_mannequin_matches_solid_angles(device, mannequin):
    vertices, faces = mannequin
    g = torch.Generator().manual_seed(8)
    lower, upper = vertices.min(0).values - 0.05, vertices.max(0).values + 0.05
    points = lower + (upper - lower) * torch.rand(600, 3, generator=g, dtype=torch.float64)
    points = torch.cat([points, vertices[::50] * 0.98])  # some just inside the surface
    winding = winding_number(points.to(device), vertices.to(device), faces.to(device)).cpu()
    solid = reference.winding_number(points[None], vertices[None], faces)[0]
    assert (solid - solid.round()).abs().max() < 1e-6  # closed: integers
    torch.testing.assert_close(winding, solid.round())
    assert (winding >= 2).any() and (winding == 1).any()  # overlapping parts are exercised


def test_winding_number_batches(mannequin):
    vertices, faces = mannequin
    bodies = torch.stack([vertices, vertices * 1.1 + 0.05, vertices.flip(-1)])
    flipped_faces = faces  # a permutation of axes mirrors the mesh: winding flips sign
    g = torch.Generator().manual_seed(9)
    points = torch.randn(3, 400, 3, generator=g, dtype=torch.float64) * 0.4
    batched = winding_number(points, bodies, flipped_faces)
    for b in range(3):
        torch.testing.assert_close(batched[b], winding_number(points[b], bodies[b], faces))
    shared = winding_number(points[0], bodies, faces)
    assert shared.shape == (3, 400)
    torch.testing.assert_close(shared[1], winding_number(points[0], bodies[1], faces))
    assert (batched[2] <= 0).all() and (batched[2] < 0).any()  # mirrored: inward orientation


def test_winding_number_nan_empty_and_degenerate(mannequin):
    vertices, faces = mannequin
    points = torch.zeros(3, 3, dtype=torch.float64)
    points[1, 0] = float("nan")
    winding = winding_number(points, vertices, faces)
    assert torch.isnan(winding[1]) and torch.isfinite(winding[[0, 2]]).all()
    assert winding_number(points[:0], vertices, faces).shape == (0,)
    flat = vertices.clone()
    flat[:, :2] = 0  # no projected area at all
    assert (winding_number(torch.randn(10, 3, dtype=torch.float64), flat, faces) == 0).all()


def test_winding_number_bad_input(mannequin):
    vertices, faces = mannequin
    points = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="closed mesh"):
        winding_number(points, vertices, faces[1:])
    with pytest.raises(ValueError, match="index vertices"):
        winding_number(points, vertices, faces.clamp_max(6000) * 2)
    with pytest.raises(ValueError, match="consistently oriented"):
        winding_number(points, vertices, torch.cat([faces, faces[:1]]))
    with pytest.raises(TypeError, match="int32 or int64"):
        winding_number(points, vertices, faces.double())
    with pytest.raises(ValueError, match="one set or one per mesh"):
        winding_number(torch.randn(2, 5, 3, dtype=torch.float64), torch.stack([vertices] * 3), faces)
    with pytest.raises(TypeError, match="same dtype"):
        winding_number(points.float(), vertices, faces)
    assert check_closed_mesh(faces.int(), vertices.shape[0]).dtype == torch.int64


def test_compiled_winding_checks_face_indices(compiled, mannequin):
    vertices, faces = mannequin
    with pytest.raises(RuntimeError, match="index vertices"):
        torch.ops.meshrec.winding_number(vertices[None, :3], vertices[None], faces + 10)


# ---- nearest points


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nearest_points_match_brute_force(device, dtype):
    g = torch.Generator().manual_seed(10)
    cloud = torch.randn(2, 5000, 3, generator=g, dtype=torch.float64)
    cloud[:, ::3, 1] = 0.0  # a plane
    cloud[:, 1::7] = (cloud[:, 1::7] * 4).round() / 4  # duplicates, ties
    queries = torch.randn(2, 700, 3, generator=g, dtype=torch.float64) * 3
    queries[:, :20] = cloud[:, 1:141:7]  # queries on duplicated points: ties broken by index
    distance, index = nearest_points(queries.to(device, dtype), cloud.to(device, dtype))
    expected_distance, expected_index = reference.nearest_points(queries.to(dtype), cloud.to(dtype))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(distance.cpu(), expected_distance, atol=tolerance, rtol=0)
    if dtype == torch.float64:
        torch.testing.assert_close(index.cpu(), expected_index)
    # brute force in numpy, one query at a time
    for b, q in [(0, 5), (1, 650), (0, 3)]:
        squared = ((cloud[b].numpy() - queries[b, q].numpy()) ** 2).sum(-1)
        assert index[b, q].item() == int(np.argmin(squared)) or dtype == torch.float32
        assert abs(distance[b, q].item() - math.sqrt(squared.min())) < tolerance * 10


def test_nearest_points_shapes_sharing_and_edges():
    g = torch.Generator().manual_seed(11)
    cloud = torch.randn(300, 3, generator=g, dtype=torch.float64)
    queries = torch.randn(4, 50, 3, generator=g, dtype=torch.float64) * 100  # far away
    distance, index = nearest_points(queries, cloud)
    assert distance.shape == index.shape == (4, 50)
    expected = reference.nearest_points(queries, cloud[None])
    torch.testing.assert_close(distance, expected[0])
    torch.testing.assert_close(index, expected[1])
    single = nearest_points(queries[0], cloud)
    assert single.distance.shape == (50,)
    one = nearest_points(queries[0], cloud[:1])
    assert (one.index == 0).all()
    empty = nearest_points(queries[0], cloud[:0])
    assert torch.isinf(empty.distance).all() and (empty.index == -1).all()
    assert nearest_points(queries[0, :0], cloud).distance.shape == (0,)
    nan = queries[0, :3].clone()
    nan[1, 1] = float("nan")
    result = nearest_points(nan, cloud)
    assert torch.isnan(result.distance[1]) and result.index[1] == -1 and torch.isfinite(result.distance[[0, 2]]).all()


def test_nearest_points_distance_gradients():
    g = torch.Generator().manual_seed(12)
    cloud = torch.randn(200, 3, generator=g, dtype=torch.float64).requires_grad_()
    queries = (torch.randn(30, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda q, p: nearest_points(q, p).distance, (queries, cloud))
    exact = cloud[:3].detach().clone().requires_grad_()  # zero distance: a zero (sub)gradient, not NaN
    (grad,) = torch.autograd.grad(nearest_points(exact, cloud.detach()).distance.sum(), exact)
    assert torch.isfinite(grad).all()


def test_nearest_points_bad_input():
    with pytest.raises(ValueError, match=r"\(Q, 3\) or \(B, Q, 3\)"):
        nearest_points(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="one cloud or one per query set"):
        nearest_points(torch.randn(2, 5, 3), torch.randn(3, 5, 3))
    with pytest.raises(TypeError, match="same dtype"):
        nearest_points(torch.randn(5, 3), torch.randn(5, 3, dtype=torch.float64))


# ---- op checks and torch.compile


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(compiled, device):
    g = torch.Generator().manual_seed(13)
    for requires_grad in (False, True):
        for dtype in DTYPES:
            source = torch.randn(3, 7, 3, generator=g, dtype=dtype).to(device).requires_grad_(requires_grad)
            target = torch.randn(3, 7, 3, generator=g, dtype=dtype).to(device)
            weights = torch.rand(3, 7, generator=g, dtype=dtype).to(device)
            torch.library.opcheck(torch.ops.meshrec.procrustes.default, (source, target, weights, True))
            torch.library.opcheck(torch.ops.meshrec.procrustes.default, (source, target, None, False))
    empty = torch.zeros(0, 5, 3, device=device)
    torch.library.opcheck(torch.ops.meshrec.procrustes.default, (empty, empty, None, True))
    x = torch.randn(2, 4, 3, device=device)
    torch.library.opcheck(torch.ops.meshrec.procrustes_backward.default,
                          (torch.randn(2, 4, 3, device=device), torch.randn(2, device=device),
                           torch.randn(2, 3, 3, device=device), torch.randn(2, 3, device=device),
                           torch.randn(2, 4, device=device), x, x + 1, None, True))
    torch.library.opcheck(torch.ops.meshrec.procrustes_backward.default,
                          (None, None, None, None, torch.randn(2, 4, device=device), x, x + 1, None, True))
    sdf, grid_min, grid_max, points = sdf_case(device=device)
    for requires_grad in (False, True):
        torch.library.opcheck(torch.ops.meshrec.sample_sdf.default,
                              (points[:50].clone().requires_grad_(requires_grad), sdf, grid_min, grid_max))
    torch.library.opcheck(torch.ops.meshrec.sample_sdf_backward.default,
                          (torch.randn(50, dtype=torch.float64, device=device), points[:50], sdf, grid_min, grid_max))
    vertices, faces = overlapping_boxes()
    torch.library.opcheck(torch.ops.meshrec.winding_number.default,
                          (torch.randn(1, 30, 3, dtype=torch.float64, device=device), vertices[None].to(device), faces.to(device)))
    torch.library.opcheck(torch.ops.meshrec.nearest_points.default,
                          (torch.randn(2, 30, 3, device=device), torch.randn(1, 100, 3, device=device)))


def test_torch_compile_pa_mpjpe_loss(compiled):
    def loss(pred, target):
        aligned = procrustes(pred, target).aligned
        return torch.linalg.vector_norm(aligned - target, dim=-1).mean()

    pred, target = torch.randn(8, 14, 3, requires_grad=True), torch.randn(8, 14, 3)
    compiled_loss = torch.compile(loss, fullgraph=True, backend="aot_eager")
    (grad,) = torch.autograd.grad(compiled_loss(pred, target), pred)
    (expected,) = torch.autograd.grad(loss(pred, target), pred)
    torch.testing.assert_close(grad, expected)
    dynamic = torch.compile(loss, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch in (3, 5):
        pred, target = torch.randn(batch, 14, 3), torch.randn(batch, 14, 3)
        torch.testing.assert_close(dynamic(pred, target), loss(pred, target))


def test_torch_compile_scene_ops(compiled):
    sdf, grid_min, grid_max, points = sdf_case(torch.float32)

    def penetration(p):
        return torch.relu(-sample_sdf(p, sdf, grid_min, grid_max)).sum()

    compiled_fn = torch.compile(penetration, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled_fn(points), penetration(points))

    def nearest(q, p):
        return torch.ops.meshrec.nearest_points(q, p)[0].amin(-1)

    q, p = torch.randn(2, 20, 3), torch.randn(1, 50, 3)
    torch.testing.assert_close(torch.compile(nearest, fullgraph=True, backend="aot_eager")(q, p), nearest(q, p))


def test_reference_fallback_agrees():
    script = (
        "import torch, meshrec, warnings\n"
        "from meshrec.ops import procrustes, sample_sdf, nearest_points, winding_number\n"
        "warnings.simplefilter('ignore')\n"
        "assert meshrec.extension.active_backend() == 'reference'\n"
        "x, y = torch.randn(10, 14, 3, dtype=torch.float64), torch.randn(10, 14, 3, dtype=torch.float64)\n"
        "r = procrustes(x, y)\n"
        "assert torch.isfinite(r.aligned).all()\n"
        "assert torch.autograd.gradcheck(lambda a: procrustes(a, y[:2]).aligned, (x[:2].clone().requires_grad_(),))\n"
        "d, i = nearest_points(torch.randn(5, 3), torch.randn(50, 3))\n"
        "assert (i >= 0).all()\n"
        "v = torch.tensor([[0,0,0],[1,0,0],[0,1,0],[0,0,1.]], dtype=torch.float64)\n"
        "f = torch.tensor([[0,2,1],[0,1,3],[0,3,2],[1,2,3]])\n"
        "w = winding_number(torch.tensor([[0.1,0.1,0.1],[2,2,2.]], dtype=torch.float64), v, f)\n"
        "assert torch.allclose(w, torch.tensor([1.0, 0.0], dtype=torch.float64)), w\n"
    )
    env = {**os.environ, "MESHREC_DISABLE_COMPILED_OPS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- Procrustes on ill-conditioned sets (the contract: s >= 0, agreement with an accurate oracle)

def _exactly_centred(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points minus their centroid, each rounded once from exact rational arithmetic."""
    from fractions import Fraction

    exact = [[Fraction(float(v)) for v in row] for row in points]
    mean = [sum(row[a] for row in exact) / len(exact) for a in range(3)]
    centred = np.array([[float(row[a] - mean[a]) for a in range(3)] for row in exact])
    return centred, np.array([float(m) for m in mean])


def accurate_similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """(aligned, scale) by numpy's SVD on exactly centred points: accurate to rounding times the
    problem's own condition, whatever the sets' offsets (an independent oracle, no Horn)."""
    x, _ = _exactly_centred(source)
    y, mean_y = _exactly_centred(target)
    K = x.T @ y
    U, _, Vt = np.linalg.svd(K)
    Z = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = Vt.T @ Z @ U.T
    scale = float(np.trace(R @ K)) / float((x**2).sum())
    return scale * x @ R.T + mean_y, scale


def _both_backends(source: np.ndarray, target: np.ndarray):
    s, t = torch.from_numpy(source)[None], torch.from_numpy(target)[None]
    return {"compiled-or-active": procrustes(s, t), "reference": ProcrustesResult(*reference.procrustes(s, t))}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(-9, -3), offset=st.floats(-1, 3),
       which=st.sampled_from(["source", "target", "both", "both-related"]))
def test_property_procrustes_small_spread_far_from_the_origin(seed, spread, offset, which):
    """Sets whose spread is 1e-9..1e-3 of their distance from the origin: scale >= 0 and the same
    aligned points as an exactly centred SVD. Before, spreads near 1e-6 classified the
    cross-covariance as rounding noise against the raw second moments and returned tr(S) / v
    (negative scales, ~5e-7 relative errors)."""
    rng = np.random.default_rng(seed)
    ratio, scale = 10.0**spread, 10.0**offset
    x, y = rng.normal(size=(14, 3)), rng.normal(size=(14, 3))
    if which != "target":
        x = scale * rng.normal(size=3) + ratio * scale * x
    if which in ("target", "both"):
        y = scale * rng.normal(size=3) + ratio * scale * y
    if which == "both-related":
        y = scale * rng.normal(size=3) + 2.0 * (x - x.mean(0)) @ np.linalg.qr(rng.normal(size=(3, 3)))[0] \
            + 0.1 * ratio * scale * y
    aligned, expected_scale = accurate_similarity(x, y)
    for name, result in _both_backends(x, y).items():
        assert result.scale.item() >= 0, name
        error = np.abs(result.aligned[0].numpy() - aligned).max()
        assert error <= 1e-12 * np.abs(aligned).max(), (name, error / np.abs(aligned).max())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), noise=st.floats(-9, -3),
       which=st.sampled_from(["source", "target", "both"]))
def test_property_procrustes_nearly_collinear_sets(seed, noise, which):
    """Points within 1e-9..1e-3 of a line: aligned points agree with an SVD oracle to rounding
    times the problem's condition (~1 / noise). Before, the fast eigen-solver's null vector was
    noise there (errors up to 1e-4 .. 1 relative against 1e-10 .. 1e-7 for the SVD)."""
    rng = np.random.default_rng(seed)
    sigma = 10.0**noise
    direction = rng.normal(size=3)

    def line() -> np.ndarray:
        return rng.normal(size=(14, 1)) * direction + sigma * rng.normal(size=(14, 3))

    x, y = rng.normal(size=(14, 3)), rng.normal(size=(14, 3))
    if which in ("source", "both"):
        x = line()
    if which == "target":
        y = line()
    if which == "both":
        y = 1.5 * x @ np.linalg.qr(rng.normal(size=(3, 3)))[0] + 0.01 * y
    aligned, _ = accurate_similarity(x, y)
    for name, result in _both_backends(x, y).items():
        assert result.scale.item() >= 0, name
        error = np.abs(result.aligned[0].numpy() - aligned).max() / np.abs(aligned).max()
        # Nearly collinear within 1e-12 counts as collinear (one valid rotation about the line):
        # the aligned points then move by up to the source's distance from the line.
        assert error <= 1e-11 + 1e-13 / sigma + (2 * sigma if which == "both" else 0.0), (name, error)


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf")])
def test_procrustes_invalid_weights_give_nan_for_their_sample(bad):
    """A NaN, negative or infinite weight makes that sample's outputs NaN (its PA error is
    reported as NaN, never as the identity's error); before, NaN and all-negative weights fell
    back silently to the identity transform."""
    source, target = torch.randn(3, 6, 3, dtype=torch.float64), torch.randn(3, 6, 3, dtype=torch.float64)
    weights = torch.ones(3, 6, dtype=torch.float64)
    weights[1, 2] = bad
    weights[2] = -1.0 if bad != bad else weights[2]  # all negative: also refused (NaN case only)
    for result in (procrustes(source, target, weights), ProcrustesResult(*reference.procrustes(source, target, weights))):
        assert torch.isfinite(result.aligned[0]).all() and torch.isfinite(result.scale[0])
        assert torch.isnan(result.aligned[1]).all() and torch.isnan(result.scale[1])
        assert torch.isnan(result.rotation[1]).all() and torch.isnan(result.residual[1]).all()
        if bad != bad:
            assert torch.isnan(result.aligned[2]).all()
    leaf = source.clone().requires_grad_()
    procrustes(leaf, target, weights).residual[0].sum().backward()
    assert torch.isfinite(leaf.grad[0]).all() and torch.isnan(leaf.grad[1]).all()


# ---- invalid values never score well: NaN in, NaN out (issue 13) --------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_winding_number_of_a_non_finite_mesh_is_nan(mannequin, bad):
    """A mesh with a NaN or infinite vertex has no inside: NaN winding numbers for every point,
    in the kernels and the reference (before: 0 everywhere, i.e. "outside")."""
    vertices, faces = mannequin
    bodies = torch.stack([vertices, vertices])
    bodies[1, 17, 2] = bad
    points = vertices[::40] * 0.9 + 0.1 * vertices.mean(0)
    for winding in (winding_number(points, bodies, faces), reference.winding_number(points[None], bodies, faces)):
        assert torch.isnan(winding[1]).all()
        assert (winding[0] >= 1).any() and torch.isfinite(winding[0]).all()


def test_scene_metrics_of_nan_bodies_and_scenes_are_nan(mannequin):
    """collision_ratio, penetration, ConFE and contact distance give NaN (never the best score 0)
    for a body with a NaN vertex or a scene point cloud with a NaN point."""
    from meshrec.metrics import collision_ratio, contact_distance, contact_fit_error, penetration_error

    vertices, faces = mannequin
    bodies = torch.stack([vertices, vertices.clone()])
    bodies[1, 5, 0] = float("nan")
    scene = vertices[::30] * 0.9 + 0.1 * vertices.mean(0)
    ratio = collision_ratio(bodies, faces, scene)
    assert ratio[0] > 0 and torch.isnan(ratio[1])
    nan_scene = scene.clone()
    nan_scene[3, 1] = float("nan")
    assert torch.isnan(collision_ratio(vertices, faces, nan_scene))
    keep = ~nan_scene.isnan().any(-1)  # a mask that excludes the NaN point counts the rest
    torch.testing.assert_close(collision_ratio(vertices, faces, nan_scene, mask=keep),
                               collision_ratio(vertices, faces, scene[keep]))
    sdf = -torch.ones(4, 4, 4, dtype=torch.float64)  # everything inside an object
    for fn in (penetration_error, lambda *a: contact_fit_error(*a, None)):
        value = fn(bodies, sdf, [-2, -2, -2], [2, 2, 2])
        assert value[0] > 0 and torch.isnan(value[1])
    distance = contact_distance(bodies, scene)
    assert torch.isfinite(distance[0]) and torch.isnan(distance[1])
    assert torch.isnan(contact_distance(vertices, nan_scene))


def test_pose_metrics_of_nan_joints_are_nan():
    """Every functional metric returns NaN for a sample with a NaN joint (before: PCK and AUC
    counted it as a miss and returned a plausible fraction)."""
    from meshrec.metrics import auc, mpjpe, pa_mpjpe, pck, scale_aligned_mpjpe

    g = torch.Generator().manual_seed(3)
    target = torch.randn(3, 14, 3, generator=g, dtype=torch.float64)
    pred = target + 0.01 * torch.randn(3, 14, 3, generator=g, dtype=torch.float64)
    pred[1, 4, 2] = float("nan")
    for fn in (mpjpe, pa_mpjpe, scale_aligned_mpjpe, pck, auc):
        value = fn(pred, target)
        assert torch.isnan(value[1]) and torch.isfinite(value[[0, 2]]).all(), fn.__name__
