"""The Rodrigues op: compiled kernels against the pure-PyTorch reference, gradients, op checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from meshrec.ops import reference
from meshrec.rotations import rodrigues
from meshrec.testing.fixtures import DEVICES

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13}


def axis_angles(count: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """Random axes with angles spread over (0, pi], plus the edge cases: zero, tiny, near pi,
    both sides of the series threshold, and angles beyond 2 pi."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=-1)
    angles = torch.rand(count, 1, generator=generator, dtype=torch.float64) * math.pi
    special = torch.tensor([0.0, 1e-12, 1e-6, 1e-3, 0.0999999, 0.1000001, 0.01, math.pi - 1e-6, math.pi, 7.0],
                           dtype=torch.float64)[:, None]
    angles[: len(special)] = special
    return (axes * angles).to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(compiled, device, dtype):
    w = axis_angles(5000, dtype, device)
    torch.testing.assert_close(rodrigues(w), reference.rodrigues(w), atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("shape", [(0, 3), (3,), (2, 0, 3), (4, 24, 3), (1, 1, 1, 3)])
def test_any_leading_shape(shape):
    w = torch.randn(shape, dtype=torch.float64)
    out = rodrigues(w)
    assert out.shape == (*shape[:-1], 3, 3)
    torch.testing.assert_close(out, reference.rodrigues(w))


def test_non_contiguous_input():
    w = torch.randn(10, 6, dtype=torch.float64)[:, ::2]
    torch.testing.assert_close(rodrigues(w), reference.rodrigues(w.contiguous()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotations_are_orthonormal(dtype):
    rotation = rodrigues(axis_angles(2000, dtype))
    eye = torch.eye(3, dtype=dtype).expand_as(rotation)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), eye, atol=10 * TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(2000, dtype=dtype), atol=10 * TOLERANCE[dtype], rtol=0)


def test_agrees_with_smplx_up_to_its_angle_epsilon():
    smplx_lbs = pytest.importorskip("smplx.lbs")
    w = axis_angles(2000, torch.float64)[10:]  # smplx's 1e-8 epsilon dominates for tiny angles
    torch.testing.assert_close(rodrigues(w), smplx_lbs.batch_rodrigues(w), atol=1e-7, rtol=0)


def test_known_rotation():
    quarter_turn_z = torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)
    torch.testing.assert_close(rodrigues(quarter_turn_z) @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-15, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [rodrigues, reference.rodrigues], ids=["op", "reference"])
def test_gradcheck(device, fn):
    w = axis_angles(40, torch.float64, device).requires_grad_()
    assert torch.autograd.gradcheck(fn, (w,))
    small = (torch.randn(20, 3, dtype=torch.float64, device=device) * 1e-4).requires_grad_()
    assert torch.autograd.gradcheck(fn, (small,))
    zero = torch.zeros(2, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (zero,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_reference(compiled, device, dtype):
    w = axis_angles(3000, dtype, device)
    grad = torch.randn(3000, 3, 3, dtype=dtype, device=device)
    leaf_op, leaf_ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    (g_op,) = torch.autograd.grad(rodrigues(leaf_op), leaf_op, grad)
    (g_ref,) = torch.autograd.grad(reference.rodrigues(leaf_ref), leaf_ref, grad)
    torch.testing.assert_close(g_op, g_ref, atol=20 * TOLERANCE[dtype], rtol=1e-5 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(compiled, device):
    for requires_grad in (False, True):
        for w in (torch.randn(7, 3), torch.randn(2, 5, 3, dtype=torch.float64), torch.zeros(0, 3)):
            w = w.to(device).requires_grad_(requires_grad)
            torch.library.opcheck(torch.ops.meshrec.rodrigues.default, (w,))
    grad, w = torch.randn(4, 3, 3, device=device), torch.randn(4, 3, device=device)
    torch.library.opcheck(torch.ops.meshrec.rodrigues_backward.default, (grad, w))


def test_double_backward_raises(compiled):
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(rodrigues(w).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        grad.sum().backward()


def test_torch_compile_uses_fake_kernel(compiled):
    def pose_rotations(pose):
        return rodrigues(pose.view(-1, 24, 3)) @ torch.ones(3, 1)

    compiled_fn = torch.compile(pose_rotations, fullgraph=True, backend="aot_eager")
    pose = torch.randn(4, 72)
    torch.testing.assert_close(compiled_fn(pose), pose_rotations(pose))
    dynamic = torch.compile(pose_rotations, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch in (3, 5):
        pose = torch.randn(batch, 72)
        torch.testing.assert_close(dynamic(pose), pose_rotations(pose))


def test_torch_compile_inductor_forward_backward(compiled):
    def loss(pose):
        return (rodrigues(pose) ** 2).sum()

    pose = torch.randn(6, 3, requires_grad=True)
    compiled_loss = torch.compile(loss, fullgraph=True)
    (grad,) = torch.autograd.grad(compiled_loss(pose), pose)
    (expected,) = torch.autograd.grad(loss(pose), pose)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (torch.randn(4, 4), ValueError, r"shape \(\.\.\., 3\)"),
        (torch.tensor(1.0), ValueError, r"shape \(\.\.\., 3\)"),
        (torch.randint(0, 3, (4, 3)), TypeError, "float32 or float64"),
        (torch.randn(4, 3).half(), TypeError, "float32 or float64"),
        ([[0.0, 0.0, 1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input(value, error, message):
    with pytest.raises(error, match=message):
        rodrigues(value)


def test_compiled_kernel_checks_its_arguments(compiled):
    with pytest.raises(RuntimeError, match="axis_angle must have shape"):
        torch.ops.meshrec.rodrigues(torch.randn(4, 2))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.meshrec.rodrigues(torch.randn(4, 3).half())
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.meshrec.rodrigues_backward(torch.randn(4, 3, 3), torch.randn(4, 3, dtype=torch.float64))


def test_nan_propagates_without_crashing():
    w = torch.tensor([[float("nan"), 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = rodrigues(w)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(*[st.floats(-20, 20, allow_nan=False)] * 3), min_size=0, max_size=50),
    st.sampled_from(DTYPES),
)
def test_property_orthonormal_and_matches_reference(vectors, dtype):
    w = torch.tensor(vectors, dtype=dtype).reshape(-1, 3)
    out = rodrigues(w)
    assert out.shape == (len(vectors), 3, 3)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, reference.rodrigues(w), atol=tolerance, rtol=0)
    eye = torch.eye(3, dtype=dtype).expand_as(out)
    torch.testing.assert_close(out @ out.transpose(-1, -2), eye, atol=tolerance * 10, rtol=0)


def test_huge_batch():
    w = torch.randn(2_000_000, 3)
    out = rodrigues(w)
    torch.testing.assert_close(out[::9973], reference.rodrigues(w[::9973]), atol=2e-6, rtol=0)


def test_reference_fallback_warns_once_and_agrees():
    script = (
        "import warnings, torch, meshrec\n"
        "from meshrec.ops import reference\n"
        "from meshrec.rotations import rodrigues\n"
        "w = torch.randn(100, 3, dtype=torch.float64, requires_grad=True)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    a = rodrigues(w); b = rodrigues(w)\n"
        "assert meshrec.extension.active_backend() == 'reference'\n"
        "fallback = [w for w in caught if issubclass(w.category, meshrec.extension.MeshrecFallbackWarning)]\n"
        "assert len(fallback) == 1, [str(w.message) for w in caught]\n"
        "assert 'pure-PyTorch reference' in str(fallback[0].message)\n"
        "torch.testing.assert_close(a, reference.rodrigues(w))\n"
        "assert torch.autograd.gradcheck(rodrigues, (w[:5].detach().requires_grad_(),))\n"
        "assert meshrec.info()['op_backend'] == 'reference'\n"
    )
    env = {**os.environ, "MESHREC_DISABLE_COMPILED_OPS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
