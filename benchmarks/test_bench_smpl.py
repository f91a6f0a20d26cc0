"""SMPL forward (and forward + backward): meshrec.body.SMPL on the fused kernels, the same module
on its plain-PyTorch reference path, and smplx.SMPL, on the same synthetic model in one run; plus
the sparse joint regressor against the dense one (H36M, 17 x 6890).

Each benchmark asserts that its result matches meshrec's kernels (or smplx's output); the
timings are medians of pytest-benchmark rounds. Targets (issue 3) are ratios to smplx.
"""

from __future__ import annotations

import pytest
import torch

from meshrec.body import SMPL, JointRegressor, load_body_model_arrays
from meshrec.body import mannequin
from meshrec.testing import synthetic_smpl_arrays, write_synthetic_smpl
from meshrec.testing.fixtures import DEVICES

smplx = pytest.importorskip("smplx")
IMPLEMENTATIONS = ["meshrec", "reference", "smplx"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_synthetic_smpl(tmp_path_factory.mktemp("smpl"))


def build(implementation: str, model_file, device, monkeypatch):
    if implementation == "smplx":
        arrays = load_body_model_arrays(model_file)
        return smplx.SMPL(model_path=str(model_file.parent), data_struct=smplx.utils.Struct(**arrays),
                          create_transl=False).to(device)
    if implementation == "reference":
        # The module on the ops' pure-PyTorch reference, as without the compiled library.
        monkeypatch.setattr("meshrec.ops.smpl.use_compiled", lambda tensor: False)
        monkeypatch.setattr("meshrec.rotations.use_compiled", lambda tensor: False)
    return SMPL(model_file, create_transl=False).to(device)


def inputs(batch: int, device):
    generator = torch.Generator().manual_seed(0)
    pose = (torch.rand(batch, 72, generator=generator) - 0.5).to(device)
    betas = torch.randn(batch, 10, generator=generator).to(device)
    return pose, betas


@pytest.mark.benchmark(group="smpl-forward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 64, 512])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward(timed, model_file, implementation, batch, device, monkeypatch):
    model = build(implementation, model_file, device, monkeypatch)
    pose, betas = inputs(batch, device)
    with torch.no_grad():
        out = timed(model, betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
        monkeypatch.undo()
        expected = SMPL(model_file, create_transl=False).to(device)(
            betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
    torch.testing.assert_close(out.vertices, expected.vertices, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints, atol=1e-4, rtol=0)


@pytest.mark.benchmark(group="smpl-forward-backward")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_backward(timed, model_file, implementation, batch, device, monkeypatch):
    model = build(implementation, model_file, device, monkeypatch)
    pose, betas = inputs(batch, device)
    pose.requires_grad_(True)
    betas.requires_grad_(True)

    def step(model):
        out = model(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
        return torch.autograd.grad(out.vertices.square().sum() + out.joints.square().sum(), (pose, betas))

    grads = timed(step, model)
    monkeypatch.undo()
    expected = step(SMPL(model_file, create_transl=False).to(device))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)


@pytest.mark.benchmark(group="smpl-joints-loss")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("implementation", ["meshrec-joints-only", "meshrec", "smplx"])
def test_joints_loss_forward_backward(timed, model_file, implementation, batch, device, monkeypatch):
    """Forward + backward of a loss on the 45 joints only (a fitting loop's step): meshrec's
    joints-only path (return_verts=False), meshrec's full op, smplx."""
    model = build(implementation.replace("-joints-only", ""), model_file, device, monkeypatch)
    pose, betas = inputs(batch, device)
    pose.requires_grad_(True)
    betas.requires_grad_(True)
    extra = {"return_verts": False} if implementation == "meshrec-joints-only" else {}

    def step(model):
        out = model(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:], **extra)
        return torch.autograd.grad(out.joints.square().sum(), (pose, betas))

    grads = timed(step, model)
    extra = {}
    expected = step(SMPL(model_file, create_transl=False).to(device))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)


@pytest.mark.benchmark(group="joint-regressor-h36m")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ["meshrec-sparse", "dense-einsum"])
def test_h36m_regressor(timed, implementation, device):
    dense = torch.as_tensor(mannequin.make_h36m_regressor(synthetic_smpl_arrays()), dtype=torch.float32).to(device)
    vertices = torch.randn(512, 6890, 3, device=device)
    if implementation == "meshrec-sparse":
        regressor = JointRegressor(dense).to(device)
        joints = timed(regressor, vertices)
    else:
        joints = timed(torch.einsum, "jv,bvk->bjk", dense, vertices)
    torch.testing.assert_close(joints, torch.einsum("jv,bvk->bjk", dense, vertices), atol=1e-4, rtol=0)
