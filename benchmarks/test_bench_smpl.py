"""SMPL forward: meshrec.body.SMPL against smplx.SMPL on the same synthetic model."""

from __future__ import annotations

import pytest
import torch

from meshrec.body import SMPL, load_body_model_arrays
from meshrec.testing import write_synthetic_smpl
from meshrec.testing.fixtures import DEVICES

smplx = pytest.importorskip("smplx")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_synthetic_smpl(tmp_path_factory.mktemp("smpl"))


def build(implementation: str, model_file, device):
    if implementation == "meshrec":
        return SMPL(model_file, create_transl=False).to(device)
    arrays = load_body_model_arrays(model_file)
    return smplx.SMPL(model_path=str(model_file.parent), data_struct=smplx.utils.Struct(**arrays),
                      create_transl=False).to(device)


def inputs(batch: int, device):
    generator = torch.Generator().manual_seed(0)
    pose = (torch.rand(batch, 72, generator=generator) - 0.5).to(device)
    betas = (torch.randn(batch, 10, generator=generator)).to(device)
    return pose, betas


@pytest.mark.benchmark(group="smpl-forward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 64, 512])
@pytest.mark.parametrize("implementation", ["meshrec", "smplx"])
def test_forward(timed, model_file, implementation, batch, device):
    model = build(implementation, model_file, device)
    pose, betas = inputs(batch, device)
    with torch.no_grad():
        out = timed(model, betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
        expected = build("meshrec", model_file, device)(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
    torch.testing.assert_close(out.vertices, expected.vertices, atol=1e-4, rtol=0)


@pytest.mark.benchmark(group="smpl-forward-backward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [64])
@pytest.mark.parametrize("implementation", ["meshrec", "smplx"])
def test_forward_backward(timed, model_file, implementation, batch, device):
    model = build(implementation, model_file, device)
    pose, betas = inputs(batch, device)
    pose.requires_grad_(True)
    betas.requires_grad_(True)

    def step():
        out = model(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
        return torch.autograd.grad(out.vertices.square().sum() + out.joints.square().sum(), (pose, betas))

    grads = timed(step)
    assert all(torch.isfinite(g).all() for g in grads)
