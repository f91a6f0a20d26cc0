"""Rodrigues (axis-angle -> rotation matrix): compiled op, pure-PyTorch reference, smplx."""

from __future__ import annotations

import pytest
import torch

from meshrec.ops import reference
from meshrec.rotations import rodrigues
from meshrec.testing.fixtures import DEVICES

smplx_lbs = pytest.importorskip("smplx.lbs")
IMPLEMENTATIONS = {
    "meshrec": rodrigues,
    "reference": reference.rodrigues,
    "smplx": lambda w: smplx_lbs.batch_rodrigues(w.reshape(-1, 3)),
}


@pytest.mark.benchmark(group="rodrigues-forward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("count", [24, 24 * 64, 24 * 4096])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_forward(timed, implementation, count, device):
    w = torch.randn(count, 3, device=device)
    out = timed(IMPLEMENTATIONS[implementation], w)
    torch.testing.assert_close(out.reshape(count, 3, 3), reference.rodrigues(w), atol=1e-5, rtol=0)


@pytest.mark.benchmark(group="rodrigues-backward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("count", [24 * 64, 24 * 4096])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_forward_backward(timed, implementation, count, device):
    w = torch.randn(count, 3, device=device, requires_grad=True)
    grad = torch.randn(count, 3, 3, device=device)

    def step():
        (g,) = torch.autograd.grad(IMPLEMENTATIONS[implementation](w).reshape(count, 3, 3), w, grad)
        return g

    result = timed(step)
    (expected,) = torch.autograd.grad(reference.rodrigues(w), w, grad)
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-4)
