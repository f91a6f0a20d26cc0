"""The SMPL ops (meshrec::smpl_lbs, meshrec::joint_regression): kernels against the pure-PyTorch
reference, gradients, op checks, compile, bad input, and batch edges (0, 1, chunk boundaries)."""

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

from meshrec.body import SMPL, SMPL_VERTEX_JOINTS, mannequin
from meshrec.ops import SparseRegressor, joint_regression, prepare_smpl_arrays, reference, smpl_lbs
from meshrec.rotations import rodrigues
from meshrec.testing import synthetic_smpl_arrays, synthetic_smplh_arrays
from meshrec.testing.fixtures import DEVICES

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}
CPU_CHUNK = 1024  # bodies per chunk of the CPU kernel (csrc/smpl/smpl_cpu.cpp, kBodiesPerChunk)


def model_arrays(smplh: bool = False) -> dict:
    return synthetic_smplh_arrays() if smplh else synthetic_smpl_arrays()


def parents_of(arrays: dict) -> list[int]:
    parents = np.asarray(arrays["kintree_table"][0]).astype(np.int64)
    parents[0] = -1
    return parents.tolist()


_PREPARED: dict = {}


def prepared(dtype=torch.float64, device="cpu", smplh=False):
    """SMPLArrays of the synthetic SMPL (or SMPL-H) model, cached per process."""
    key = (smplh,)
    if key not in _PREPARED:
        arrays = model_arrays(smplh)
        posedirs = np.asarray(arrays["posedirs"]).reshape(-1, np.asarray(arrays["posedirs"]).shape[-1]).T
        _PREPARED[key] = (arrays, prepare_smpl_arrays(arrays["v_template"], arrays["shapedirs"], posedirs,
                                                      arrays["J_regressor"], parents_of(arrays), arrays["weights"],
                                                      dtype=torch.float64))
    arrays, smpl_arrays = _PREPARED[key]
    return arrays, smpl_arrays.to(device=device, dtype=dtype)


def random_rotations(batch: int, joints: int, dtype, device="cpu", seed: int = 0) -> torch.Tensor:
    """Rotations with angles over [0, pi], including angles of 1e-7 and pi - 1e-7."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(batch, joints, 3, generator=generator, dtype=torch.float64), dim=-1)
    angles = torch.rand(batch, joints, 1, generator=generator, dtype=torch.float64) * math.pi
    if batch:
        angles[0, ::3] = 1e-7
        angles[0, 1::3] = math.pi - 1e-7
    return rodrigues(axes * angles).to(device=device, dtype=dtype)


def random_betas(batch: int, count: int, dtype, device="cpu", seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    betas = torch.rand(batch, count, generator=generator, dtype=torch.float64) * 10 - 5
    if batch:
        betas[0] = 5.0
        betas[-1] = -5.0
    return betas.to(device=device, dtype=dtype)


def regressors(arrays: dict, dtype, device) -> dict[str, SparseRegressor]:
    return {
        "vertex_joints": SparseRegressor.from_vertex_ids([v for _, v in SMPL_VERTEX_JOINTS], 6890, dtype, device),
        "h36m": SparseRegressor.from_dense(mannequin.make_h36m_regressor(arrays), dtype, device),
    }


def inputs(batch, dtype, device, smplh=False, seed=0, templates=False):
    arrays, smpl = prepared(dtype, device, smplh)
    num_joints = len(smpl.parents)
    generator = torch.Generator().manual_seed(seed + 7)
    kwargs = dict(transl=(torch.randn(batch, 3, generator=generator, dtype=torch.float64)).to(device, dtype))
    if templates:
        offsets = torch.randn(6890, 3, generator=generator, dtype=torch.float64) * 0.01
        kwargs["vertex_template"] = (smpl.v_template + offsets.to(device, dtype)).unsqueeze(0).repeat(batch, 1, 1)
        kwargs["joint_template"] = (smpl.joint_template + 0.01).unsqueeze(0).repeat(batch, 1, 1)
    return (random_betas(batch, smpl.shapedirs.shape[0], dtype, device, seed),
            random_rotations(batch, num_joints, dtype, device, seed), smpl, kwargs, arrays)


# ---- forward parity ----------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 5, 70])
def test_matches_reference(compiled, device, dtype, batch):
    betas, rotations, smpl, kwargs, arrays = inputs(batch, dtype, device, seed=batch)
    for name, regressor in regressors(arrays, dtype, device).items():
        vertices, joints = smpl_lbs(betas, rotations, smpl, regressor=regressor, **kwargs)
        expected_vertices, expected_joints = reference.smpl_lbs(betas, rotations, smpl, regressor=regressor, **kwargs)
        assert joints.shape == (batch, 24 + regressor.num_rows, 3), name
        torch.testing.assert_close(vertices, expected_vertices, atol=TOLERANCE[dtype], rtol=0)
        torch.testing.assert_close(joints, expected_joints, atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_templates_and_no_translation_match_reference(compiled, device, dtype):
    betas, rotations, smpl, kwargs, _ = inputs(9, dtype, device, templates=True)
    del kwargs["transl"]
    got = smpl_lbs(betas, rotations, smpl, **kwargs)
    expected = reference.smpl_lbs(betas, rotations, smpl, **kwargs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=TOLERANCE[dtype], rtol=0)
    shared = smpl_lbs(betas, rotations, smpl, vertex_template=kwargs["vertex_template"][0],
                      joint_template=kwargs["joint_template"][0])
    torch.testing.assert_close(shared[0], got[0], atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_smplh_52_joints_match_reference(compiled, device):
    betas, rotations, smpl, kwargs, arrays = inputs(6, torch.float64, device, smplh=True)
    assert len(smpl.parents) == 52 and smpl.posedirs.shape[0] == 51 * 9
    got = smpl_lbs(betas, rotations, smpl, **kwargs)
    expected = reference.smpl_lbs(betas, rotations, smpl, **kwargs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_identity_pose_zero_betas_is_the_template(compiled):
    _, smpl = prepared()
    rotations = torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3)
    vertices, joints = smpl_lbs(torch.zeros(2, 10, dtype=torch.float64), rotations, smpl)
    torch.testing.assert_close(vertices, smpl.v_template.expand(2, -1, -1), atol=1e-14, rtol=0)
    torch.testing.assert_close(joints, smpl.joint_template.expand(2, -1, -1), atol=1e-14, rtol=0)


def test_prepared_arrays_fold_the_regressor(compiled):
    arrays, smpl = prepared()
    regressor = np.asarray(arrays["J_regressor"].toarray() if hasattr(arrays["J_regressor"], "toarray")
                           else arrays["J_regressor"])
    torch.testing.assert_close(smpl.joint_template, torch.as_tensor(regressor @ arrays["v_template"]))
    weights = np.asarray(arrays["weights"])
    assert smpl.skin_joints.shape[1] == (weights != 0).sum(1).max()
    dense = torch.zeros(6890, 24, dtype=torch.float64).scatter_add_(1, smpl.skin_joints.long(), smpl.skin_weights)
    torch.testing.assert_close(dense, torch.as_tensor(weights), atol=0, rtol=0)
    panels = smpl.blend_panels
    assert panels.shape == (math.ceil(3 * 6890 / 192), 217, 192)
    unpacked = panels.transpose(0, 1).reshape(217, -1)[:, : 3 * 6890]
    torch.testing.assert_close(unpacked, torch.cat([smpl.shapedirs, smpl.posedirs]), atol=0, rtol=0)


# ---- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_every_input(compiled, device):
    """Betas, axis-angle pose (through the Rodrigues op), rotation matrices, translation and both
    templates, in float64; outputs include regressed joints."""
    _, smpl = prepared(torch.float64, device)
    arrays = model_arrays()
    regressor = regressors(arrays, torch.float64, device)["h36m"]
    generator = torch.Generator().manual_seed(3)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(device).requires_grad_()

    betas, axis_angle, transl = leaf(2, 10), leaf(2, 24, 3, scale=0.7), leaf(2, 3)
    vertex_template = (smpl.v_template + 0.01 * torch.randn(6890, 3, generator=generator, dtype=torch.float64).to(device))
    vertex_template = vertex_template.detach().requires_grad_()
    joint_template = smpl.joint_template.detach().clone().requires_grad_()

    def forward(betas, axis_angle, transl, vertex_template, joint_template):
        vertices, joints = smpl_lbs(betas, rodrigues(axis_angle), smpl, transl=transl,
                                    vertex_template=vertex_template, joint_template=joint_template,
                                    regressor=regressor)
        return vertices, joints

    assert torch.autograd.gradcheck(forward, (betas, axis_angle, transl, vertex_template, joint_template),
                                    fast_mode=True)
    rotations = random_rotations(1, 24, torch.float64, device).requires_grad_()
    small_betas = leaf(1, 10)

    def from_matrices(betas, rotations):
        vertices, joints = smpl_lbs(betas, rotations, smpl)
        return vertices[:, ::53], joints

    assert torch.autograd.gradcheck(from_matrices, (small_betas, rotations))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_backward_matches_reference(compiled, device, dtype, batch):
    betas, rotations, smpl, kwargs, arrays = inputs(batch, dtype, device, seed=batch, templates=True)
    regressor = regressors(arrays, dtype, device)["vertex_joints"]
    leaves = [betas, rotations, kwargs["transl"], kwargs["vertex_template"], kwargs["joint_template"]]
    grads = []
    for fn in (smpl_lbs, reference.smpl_lbs):
        copies = [x.detach().clone().requires_grad_() for x in leaves]
        vertices, joints = fn(copies[0], copies[1], smpl, transl=copies[2], vertex_template=copies[3],
                              joint_template=copies[4], regressor=regressor)
        generator = torch.Generator().manual_seed(11)
        loss = ((vertices * torch.randn(vertices.shape, generator=generator, dtype=torch.float64).to(device, dtype)).sum()
                + (joints * torch.randn(joints.shape, generator=generator, dtype=torch.float64).to(device, dtype)).sum())
        grads.append(torch.autograd.grad(loss, copies))
    tolerance = dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64 else dict(atol=5e-3, rtol=1e-4)
    for name, got, expected in zip(("betas", "rotations", "transl", "vertex_template", "joint_template"), *grads):
        torch.testing.assert_close(got, expected, **tolerance, msg=lambda m: f"{name}: {m}")


def test_gradient_of_joints_only_and_shared_templates(compiled):
    _, smpl = prepared()
    betas = random_betas(4, 10, torch.float64).requires_grad_()
    template = smpl.v_template.clone().requires_grad_()
    joint_template = smpl.joint_template.clone().requires_grad_()
    _, joints = smpl_lbs(betas, random_rotations(4, 24, torch.float64), smpl, vertex_template=template,
                         joint_template=joint_template)
    grads = torch.autograd.grad(joints.sum(), (betas, template, joint_template))
    assert grads[1].shape == (6890, 3) and grads[2].shape == (24, 3)
    assert grads[1].abs().max() == 0  # kinematic joints do not depend on the vertex template
    betas_ref = betas.detach().clone().requires_grad_()
    _, joints_ref = reference.smpl_lbs(betas_ref, random_rotations(4, 24, torch.float64), smpl)
    (expected,) = torch.autograd.grad(joints_ref.sum(), betas_ref)
    torch.testing.assert_close(grads[0], expected, atol=1e-10, rtol=0)


def test_double_backward_raises(compiled):
    _, smpl = prepared()
    betas = random_betas(2, 10, torch.float64).requires_grad_()
    vertices, _ = smpl_lbs(betas, random_rotations(2, 24, torch.float64), smpl)
    (grad,) = torch.autograd.grad(vertices.sum(), betas, create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        grad.sum().backward()


def test_no_gradient_for_model_arrays(compiled):
    _, smpl = prepared()
    learnable = smpl._replace(posedirs=smpl.posedirs.clone().requires_grad_())
    vertices, _ = torch.ops.meshrec.smpl_lbs(
        random_betas(1, 10, torch.float64).requires_grad_(), random_rotations(1, 24, torch.float64), None,
        learnable.v_template[None], learnable.joint_template[None], learnable.shapedirs, learnable.posedirs,
        learnable.blend_panels, learnable.joint_shapedirs, learnable.parents, learnable.skin_joints,
        learnable.skin_weights, *SparseRegressor.from_vertex_ids([], 6890, torch.float64)[:3], 0, True)[:2]
    with pytest.raises(RuntimeError, match="no gradient with respect to the model arrays"):
        vertices.sum().backward()


# ---- op checks and compile ---------------------------------------------------------------------

def _op_args(batch, dtype, device, save_posed, requires_grad=False, regressor=True):
    betas, rotations, smpl, kwargs, arrays = inputs(batch, dtype, device)
    picker = regressors(arrays, dtype, device)["vertex_joints"] if regressor else SparseRegressor.from_vertex_ids(
        [], 6890, dtype, device)
    betas, rotations, transl = (x.requires_grad_(requires_grad) for x in (betas, rotations, kwargs["transl"]))
    return (betas, rotations, transl, smpl.v_template[None], smpl.joint_template[None], smpl.shapedirs,
            smpl.posedirs, smpl.blend_panels, smpl.joint_shapedirs, list(smpl.parents), smpl.skin_joints,
            smpl.skin_weights, picker.vertex_ids, picker.rows, picker.weights, picker.num_rows, save_posed)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(compiled, device):
    for dtype, batch, requires_grad, regressor in ((torch.float64, 3, True, True), (torch.float32, 2, False, False),
                                                   (torch.float64, 0, False, True)):
        args = _op_args(batch, dtype, device, save_posed=requires_grad, requires_grad=requires_grad,
                        regressor=regressor)
        torch.library.opcheck(torch.ops.meshrec.smpl_lbs.default, args)
    args = _op_args(2, torch.float64, device, save_posed=True)
    vertices, joints, posed = torch.ops.meshrec.smpl_lbs(*args)
    backward_args = (torch.randn_like(vertices), torch.randn_like(joints), args[0], args[1], args[4], args[5],
                     args[6], args[8], args[9], args[10], args[11], args[12], args[13], args[14], posed)
    torch.library.opcheck(torch.ops.meshrec.smpl_lbs_backward.default, backward_args)
    picker = regressors(model_arrays(), torch.float64, device)["h36m"]
    vertices = vertices.detach().requires_grad_()
    torch.library.opcheck(torch.ops.meshrec.joint_regression.default,
                          (vertices, picker.vertex_ids, picker.rows, picker.weights, picker.num_rows))
    torch.library.opcheck(torch.ops.meshrec.joint_regression_backward.default,
                          (torch.randn(2, 17, 3, dtype=torch.float64, device=device), picker.vertex_ids, picker.rows,
                           picker.weights, 6890))


def test_torch_compile_forward_backward(compiled):
    _, smpl = prepared(torch.float32)

    def loss(pose, betas):
        vertices, joints = smpl_lbs(betas, rodrigues(pose.view(-1, 24, 3)), smpl)
        return vertices.square().mean() + joints.square().mean()

    pose = (torch.rand(3, 72) - 0.5).requires_grad_()
    betas = torch.randn(3, 10, requires_grad=True)
    expected = torch.autograd.grad(loss(pose, betas), (pose, betas))
    for backend in ("aot_eager", "inductor"):
        compiled_loss = torch.compile(loss, backend=backend, fullgraph=True)
        got = torch.autograd.grad(compiled_loss(pose, betas), (pose, betas))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)
    dynamic = torch.compile(lambda p, b: smpl_lbs(b, rodrigues(p.view(-1, 24, 3)), smpl)[0], dynamic=True,
                            fullgraph=True, backend="aot_eager")
    for batch in (2, 5):
        pose, betas = torch.rand(batch, 72) - 0.5, torch.randn(batch, 10)
        torch.testing.assert_close(dynamic(pose, betas), smpl_lbs(betas, rodrigues(pose.view(-1, 24, 3)), smpl)[0])


def test_torch_compile_of_a_module_calling_smpl_inductor(compiled, body_models_dir):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.smpl = SMPL(body_models_dir)

        def forward(self, pose, betas):
            out = self.smpl(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:])
            return out.vertices.mean(1) + out.joints.mean(1)

    module = Wrapper()
    pose = (torch.rand(2, 72) - 0.5).requires_grad_()
    betas = torch.randn(2, 10)
    compiled_module = torch.compile(module)
    torch.testing.assert_close(compiled_module(pose, betas), module(pose, betas))
    (grad,) = torch.autograd.grad(compiled_module(pose, betas).sum(), pose)
    (expected,) = torch.autograd.grad(module(pose, betas).sum(), pose)
    torch.testing.assert_close(grad, expected)


# ---- determinism -------------------------------------------------------------------------------

def test_results_do_not_depend_on_the_thread_count(compiled):
    """Forward outputs are bitwise equal for any thread count (each value is computed by exactly one
    work item, in a fixed order); the backward's blend-shape GEMM runs on BLAS, whose rounding may
    depend on the threads, so gradients agree to rounding."""
    betas, rotations, smpl, kwargs, arrays = inputs(37, torch.float32, "cpu")
    betas.requires_grad_()
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            vertices, joints = smpl_lbs(betas, rotations, smpl, **kwargs)
            (grad,) = torch.autograd.grad(vertices.sum() + joints.sum(), betas)
            results.append((vertices, joints, grad))
    finally:
        torch.set_num_threads(threads)
    for vertices, joints, grad in results[1:]:
        assert torch.equal(vertices, results[0][0]) and torch.equal(joints, results[0][1])
        torch.testing.assert_close(grad, results[0][2], atol=1e-3, rtol=1e-5)
    assert torch.equal(results[0][2], results[2][2])  # same thread count: same gradient


# ---- batch edges -------------------------------------------------------------------------------

def test_empty_batch(compiled):
    _, smpl = prepared(torch.float32)
    betas = torch.zeros(0, 10, requires_grad=True)
    vertices, joints = smpl_lbs(betas, torch.zeros(0, 24, 3, 3), smpl, transl=torch.zeros(0, 3))
    assert vertices.shape == (0, 6890, 3) and joints.shape == (0, 24, 3)
    (grad,) = torch.autograd.grad(vertices.sum(), betas)
    assert grad.shape == (0, 10)


def test_batches_across_chunks(compiled):
    """More bodies than one chunk of the CPU kernel; bodies at the chunk and tile boundaries match
    the reference."""
    batch = 2 * CPU_CHUNK + 3
    betas, rotations, smpl, kwargs, _ = inputs(batch, torch.float32, "cpu", seed=5)
    vertices, joints = smpl_lbs(betas, rotations, smpl, **kwargs)
    picked = torch.tensor([0, 1, 63, 64, CPU_CHUNK - 1, CPU_CHUNK, CPU_CHUNK + 1, 2 * CPU_CHUNK, batch - 1])
    expected_vertices, expected_joints = reference.smpl_lbs(betas[picked], rotations[picked], smpl,
                                                            transl=kwargs["transl"][picked])
    torch.testing.assert_close(vertices[picked], expected_vertices, atol=2e-5, rtol=0)
    torch.testing.assert_close(joints[picked], expected_joints, atol=2e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(0, 140), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       with_transl=st.booleans(), with_regressor=st.booleans())
def test_property_any_batch_matches_reference(batch, dtype, seed, with_transl, with_regressor):
    betas, rotations, smpl, kwargs, arrays = inputs(batch, dtype, "cpu", seed=seed)
    regressor = regressors(arrays, dtype, "cpu")["vertex_joints"] if with_regressor else None
    transl = kwargs["transl"] if with_transl else None
    vertices, joints = smpl_lbs(betas, rotations, smpl, transl=transl, regressor=regressor)
    assert vertices.shape == (batch, 6890, 3)
    assert joints.shape == (batch, 24 + (21 if with_regressor else 0), 3)
    if batch:
        expected = reference.smpl_lbs(betas, rotations, smpl, transl=transl, regressor=regressor)
        torch.testing.assert_close(vertices, expected[0], atol=TOLERANCE[dtype], rtol=0)
        torch.testing.assert_close(joints, expected[1], atol=TOLERANCE[dtype], rtol=0)


# ---- joint regression --------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_joint_regression_matches_dense(device, dtype):
    arrays = model_arrays()
    dense = np.concatenate([mannequin.make_h36m_regressor(arrays), mannequin.make_extra_regressor(arrays)])
    regressor = SparseRegressor.from_dense(dense, dtype, device)
    assert regressor.num_rows == 26 and regressor.weights.numel() == np.count_nonzero(dense)
    vertices = torch.randn(7, 6890, 3, dtype=torch.float64).to(device, dtype)
    expected = torch.einsum("jv,bvk->bjk", torch.as_tensor(dense).to(device, dtype), vertices)
    torch.testing.assert_close(joint_regression(vertices, regressor), expected,
                               atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    torch.testing.assert_close(regressor.to_dense(), torch.as_tensor(dense).to(device, dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_joint_regression_gradcheck_and_reference(device):
    regressor = SparseRegressor.from_dense(mannequin.make_extra_regressor(model_arrays()), torch.float64, device)
    vertices = torch.randn(2, 6890, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: joint_regression(v, regressor), (vertices,), fast_mode=True)
    grad = torch.randn(2, 9, 3, dtype=torch.float64, device=device)
    (got,) = torch.autograd.grad(joint_regression(vertices, regressor), vertices, grad)
    (expected,) = torch.autograd.grad(reference.joint_regression(vertices, regressor), vertices, grad)
    torch.testing.assert_close(got, expected, atol=1e-14, rtol=0)


def test_joint_regression_edges(compiled):
    regressor = SparseRegressor.from_vertex_ids([5, 2, 5], 10, torch.float64)  # a vertex picked twice
    vertices = torch.randn(3, 10, 3, dtype=torch.float64)
    torch.testing.assert_close(joint_regression(vertices, regressor), vertices[:, [5, 2, 5]])
    empty = SparseRegressor.from_dense(np.zeros((0, 10)), torch.float64)
    assert joint_regression(vertices, empty).shape == (3, 0, 3)
    assert joint_regression(vertices[:0], regressor).shape == (0, 3, 3)
    zero_rows = SparseRegressor.from_dense(np.zeros((2, 10)), torch.float64)
    assert joint_regression(vertices, zero_rows).abs().max() == 0


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(betas=torch.zeros(2, 9, dtype=torch.float64)), ValueError, r"betas must have shape \(B, 10\)"),
        (dict(rotations=torch.zeros(2, 23, 3, 3, dtype=torch.float64)), ValueError,
         r"rotations must have shape \(B, 24, 3, 3\)"),
        (dict(rotations=torch.zeros(3, 24, 3, 3, dtype=torch.float64)), ValueError, r"with B = 2"),
        (dict(transl=torch.zeros(2, 2, dtype=torch.float64)), ValueError, r"transl must have shape \(B, 3\)"),
        (dict(betas=torch.zeros(2, 10)), TypeError, "betas has dtype torch.float32 but the model arrays are"),
        (dict(transl=torch.zeros(2, 3)), TypeError, "transl has dtype torch.float32"),
        (dict(rotations=torch.zeros(2, 24, 3, 3, dtype=torch.float64, device="meta")), ValueError,
         "rotations is on meta but the model arrays are on cpu"),
        (dict(vertex_template=torch.zeros(2, 6890, 3, dtype=torch.float64)), ValueError, "needs joint_template"),
        (dict(vertex_template=torch.zeros(6889, 3, dtype=torch.float64), joint_template=torch.zeros(24, 3, dtype=torch.float64)),
         ValueError, r"vertex_template must have shape \(6890, 3\) or \(B, 6890, 3\)"),
        (dict(betas=[[0.0] * 10]), TypeError, "betas must be a torch.Tensor"),
    ],
)
def test_bad_input_names_the_argument(change, error, message):
    _, smpl = prepared()
    kwargs = dict(betas=torch.zeros(2, 10, dtype=torch.float64), rotations=torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3),
                  arrays=smpl) | change
    with pytest.raises(error, match=message):
        smpl_lbs(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_with_a_cpu_model():
    _, smpl = prepared()
    with pytest.raises(ValueError, match="betas is on cuda:0 but the model arrays are on cpu"):
        smpl_lbs(torch.zeros(1, 10, dtype=torch.float64, device="cuda"), torch.eye(3, dtype=torch.float64).expand(1, 24, 3, 3),
                 smpl)


def test_compiled_kernel_checks_its_arguments(compiled):
    args = list(_op_args(2, torch.float64, "cpu", save_posed=False))
    for index, value, message in (
        (0, torch.zeros(2, 10), "rotations .* and betas .* must have the same dtype"),
        (1, torch.zeros(2, 23, 3, 3, dtype=torch.float64), r"rotations must have shape \(B, J, 3, 3\)"),
        (2, torch.zeros(2, 4, dtype=torch.float64), r"transl must have shape \(B, 3\)"),
        (7, torch.zeros(3, 3, dtype=torch.float64), "blend_panels must have shape"),
        (9, [0, 1], r"parents\[0\] = 0: every joint's parent must come before it"),
        (10, torch.zeros(6890, 4, dtype=torch.int64), "skin_joints must be int32"),
    ):
        bad = list(args)
        bad[index] = value
        with pytest.raises(RuntimeError, match=message):
            torch.ops.meshrec.smpl_lbs(*bad)


def test_bad_model_arrays():
    arrays = model_arrays()
    parents = parents_of(arrays)
    posedirs = np.asarray(arrays["posedirs"]).reshape(-1, 207).T

    def build(**change):
        kwargs = dict(v_template=arrays["v_template"], shapedirs=arrays["shapedirs"], posedirs=posedirs,
                      j_regressor=arrays["J_regressor"], parents=parents, lbs_weights=arrays["weights"]) | change
        return prepare_smpl_arrays(**kwargs)

    with pytest.raises(ValueError, match="every joint's parent must come before it"):
        build(parents=[-1, 2, 0] + parents[3:])
    with pytest.raises(ValueError, match=r"lbs_weights must have shape \(6890, 24\)"):
        build(lbs_weights=np.asarray(arrays["weights"])[:, :20])
    with pytest.raises(ValueError, match="posedirs must have shape"):
        build(posedirs=posedirs[:200])
    with pytest.raises(ValueError, match="1 to 64 joints"):
        build(parents=[-1] + list(range(64)))
    with pytest.raises(ValueError, match=r"vertex ids must lie in \[0, 10\)"):
        SparseRegressor.from_vertex_ids([3, 10], 10)
    with pytest.raises(ValueError, match="NaN"):
        SparseRegressor.from_dense(np.full((2, 3), np.nan))
    regressor = SparseRegressor.from_vertex_ids([1], 10, torch.float64)
    with pytest.raises(ValueError, match=r"vertices must have shape \(B, 10, 3\)"):
        joint_regression(torch.zeros(1, 11, 3, dtype=torch.float64), regressor)
    with pytest.raises(TypeError, match="vertices has dtype torch.float32 but the regressor's weights are"):
        joint_regression(torch.zeros(1, 10, 3), regressor)


# ---- module level --------------------------------------------------------------------------------

@pytest.mark.parametrize("pose2rot", [True, False])
def test_smpl_module_rejects_nan_pose(body_models_dir, pose2rot):
    model = SMPL(body_models_dir)
    pose = torch.zeros(2, 69) if pose2rot else torch.eye(3).expand(2, 23, 3, 3).clone()
    pose[1, 4] = float("nan")
    orient = torch.zeros(2, 3) if pose2rot else torch.eye(3).expand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="body_pose contains NaN"):
        model(body_pose=pose, global_orient=orient, pose2rot=pose2rot)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_smpl_module_cuda_input_with_cpu_model(body_models_dir):
    with pytest.raises(ValueError, match=r"body_pose is on cuda:0 but the model is on cpu"):
        SMPL(body_models_dir)(body_pose=torch.zeros(1, 69, device="cuda"))


def test_smpl_module_template_argument_and_gradient(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64, create_transl=False)
    offsets = 0.01 * torch.randn(6890, 3, dtype=torch.float64)
    moved = SMPL(body_models_dir, dtype=torch.float64, create_transl=False, v_template=model.v_template + offsets)
    pose = rodrigues(torch.randn(2, 24, 3, dtype=torch.float64) * 0.5)
    kwargs = dict(global_orient=pose[:, :1], body_pose=pose[:, 1:], pose2rot=False,
                  betas=random_betas(2, 10, torch.float64))
    got = model(v_template=model.v_template + offsets, return_shaped=True, **kwargs)
    expected = moved(return_shaped=True, **kwargs)
    torch.testing.assert_close(got.vertices, expected.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.joints, expected.joints, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.v_shaped, expected.v_shaped, atol=1e-12, rtol=0)
    assert model(**kwargs).v_shaped is None
    template = (model.v_template + offsets).requires_grad_()

    def forward(template):
        out = model(v_template=template, **kwargs)
        return out.vertices[:, ::71], out.joints

    assert torch.autograd.gradcheck(forward, (template,), fast_mode=True)


def test_smpl_module_state_dict_rebuilds_kernel_arrays(body_models_dir):
    a = SMPL(body_models_dir, gender="male", dtype=torch.float64)
    b = SMPL(body_models_dir, gender="female", dtype=torch.float64)
    pose = torch.randn(2, 69, dtype=torch.float64) * 0.3
    assert not torch.allclose(a(body_pose=pose).vertices, b(body_pose=pose).vertices)
    assert not any(name.startswith("_") for name in a.state_dict())
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(body_pose=pose).vertices, a(body_pose=pose).vertices, atol=1e-12, rtol=0)
    c = SMPL(body_models_dir, gender="male").double()
    torch.testing.assert_close(c(body_pose=pose).vertices, a(body_pose=pose).vertices, atol=1e-6, rtol=0)


def test_smpl_module_joint_mapper_with_kernels(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64, joint_mapper=lambda joints: 2 * joints[:, :5])
    plain = SMPL(body_models_dir, dtype=torch.float64)
    shift = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    out = model(transl=shift)
    torch.testing.assert_close(out.joints, 2 * (plain(transl=torch.zeros(1, 3, dtype=torch.float64)).joints[:, :5]) + shift)


def test_reference_fallback_of_the_ops():
    script = (
        "import warnings, torch, numpy as np, meshrec\n"
        "from meshrec.ops import smpl_lbs, joint_regression, SparseRegressor, prepare_smpl_arrays, reference\n"
        "from meshrec.testing import synthetic_smpl_arrays\n"
        "a = synthetic_smpl_arrays()\n"
        "parents = np.asarray(a['kintree_table'][0]).astype(np.int64); parents[0] = -1\n"
        "arrays = prepare_smpl_arrays(a['v_template'], a['shapedirs'], np.asarray(a['posedirs']).reshape(-1, 207).T,\n"
        "                             a['J_regressor'], parents.tolist(), a['weights'], dtype=torch.float64)\n"
        "betas = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)\n"
        "rot = torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    v, j = smpl_lbs(betas, rot, arrays)\n"
        "assert meshrec.extension.active_backend() == 'reference'\n"
        "assert any(issubclass(w.category, meshrec.extension.MeshrecFallbackWarning) for w in caught)\n"
        "torch.testing.assert_close(v, reference.smpl_lbs(betas, rot, arrays)[0])\n"
        "v.sum().backward(); assert betas.grad.shape == (2, 10)\n"
        "r = SparseRegressor.from_vertex_ids([1, 2], 6890, torch.float64)\n"
        "torch.testing.assert_close(joint_regression(v, r), v[:, [1, 2]])\n"
    )
    env = {**os.environ, "MESHREC_DISABLE_COMPILED_OPS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- JointRegressor module ---------------------------------------------------------------------

def test_joint_regressor_module(body_models_dir):
    from meshrec.body import JointRegressor, load_joint_regressor

    h36m = JointRegressor.from_file("J_regressor_h36m.npy", body_models_dir)
    assert (h36m.num_joints, h36m.num_vertices) == (17, 6890)
    assert h36m.state_dict() == {} and "joints=17" in repr(h36m)
    dense = torch.as_tensor(load_joint_regressor("J_regressor_h36m.npy", body_models_dir))
    model = SMPL(body_models_dir, dtype=torch.float64)
    out = model(body_pose=torch.randn(3, 69, dtype=torch.float64) * 0.3)
    assert h36m.double().weights.dtype == torch.float64
    h36m = JointRegressor.from_file("J_regressor_h36m.npy", body_models_dir, dtype=torch.float64)
    torch.testing.assert_close(h36m(out.vertices), torch.einsum("jv,bvk->bjk", dense, out.vertices), atol=1e-12, rtol=0)
    torch.testing.assert_close(h36m.to_dense(), dense)
    vertices = out.vertices.detach().requires_grad_()
    (grad,) = torch.autograd.grad(h36m(vertices).sum(), vertices)
    torch.testing.assert_close(grad, dense.sum(0)[None, :, None].expand(3, -1, 3), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"vertices must have shape \(B, 6890, 3\)"):
        h36m(torch.zeros(1, 6889, 3, dtype=torch.float64))


# ---- index arrays from Python are range-checked (memory safety) ----------------------------------

_BAD_INDEX_SCRIPT = r"""
import json, sys, torch, numpy as np
from meshrec.ops import SparseRegressor, joint_regression, prepare_smpl_arrays, reference, smpl_lbs
from meshrec.testing import synthetic_smpl_arrays
a = synthetic_smpl_arrays()
parents = np.asarray(a['kintree_table'][0]).astype(np.int64); parents[0] = -1
arrays = prepare_smpl_arrays(a['v_template'], a['shapedirs'], np.asarray(a['posedirs']).reshape(-1, 207).T,
                             a['J_regressor'], parents.tolist(), a['weights'], dtype=torch.float64)
betas = torch.zeros(2, 10, dtype=torch.float64)
rot = torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3).contiguous()
good = SparseRegressor.from_vertex_ids([1, 5, 9], 6890, torch.float64)
verts = torch.zeros(2, 6890, 3, dtype=torch.float64)
results = {}

def probe(name, fn):
    try:
        fn()
        results[name] = ["ok", ""]
    except Exception as error:
        results[name] = [type(error).__name__, str(error).splitlines()[0]]
    print(json.dumps(results), flush=True)   # what was reached survives a crash

def with_skin(value, position=(17, 0)):
    skin = arrays.skin_joints.clone(); skin[position] = value
    return arrays._replace(skin_joints=skin)

def reg(**change):
    return good._replace(**change)

ids = lambda *v: torch.tensor(v, dtype=torch.int32)
for backend, lbs, regress in (("compiled", smpl_lbs, joint_regression),
                              ("reference", reference.smpl_lbs, reference.joint_regression)):
    for value in (24, -1, 2**30):
        probe(f"{backend} skin_joints {value}", lambda: lbs(betas, rot, with_skin(value)))
    probe(f"{backend} regressor rows 3", lambda: lbs(betas, rot, arrays, regressor=reg(rows=ids(0, 1, 3))))
    probe(f"{backend} regressor vertex -1", lambda: lbs(betas, rot, arrays, regressor=reg(vertex_ids=ids(-1, 5, 9))))
    probe(f"{backend} regressor vertex 6890", lambda: regress(verts, reg(vertex_ids=ids(1, 5, 6890))))
    probe(f"{backend} regression rows 2**30", lambda: regress(verts, reg(rows=ids(0, 2**30, 1))))
    probe(f"{backend} regression rows -7", lambda: regress(verts, reg(rows=ids(0, -7, 1))))
    probe(f"{backend} regressor unsorted", lambda: regress(verts, reg(vertex_ids=ids(9, 5, 1))))
# The backward ops take the same arrays straight from torch.ops.
grad = torch.ones(2, 3, 3, dtype=torch.float64)
probe("compiled joint_regression_backward rows", lambda: torch.ops.meshrec.joint_regression_backward(
    grad, ids(1, 5, 9), ids(0, 1, 99), good.weights, 6890))
probe("compiled joint_regression_backward vertices", lambda: torch.ops.meshrec.joint_regression_backward(
    grad, ids(1, 5, 7000), ids(0, 1, 2), good.weights, 6890))
b = betas.clone().requires_grad_()
probe("compiled smpl backward skin_joints", lambda: smpl_lbs(b, rot, with_skin(2**30, (6000, 0)))[0].sum().backward())
skin = arrays.skin_joints.clone(); skin[3, 1] = 500
probe("compiled smpl_lbs_backward skin_joints", lambda: torch.ops.meshrec.smpl_lbs_backward(
    verts, torch.zeros(2, 24, 3, dtype=torch.float64), betas, rot, arrays.joint_template[None], arrays.shapedirs,
    arrays.posedirs, arrays.joint_shapedirs, list(arrays.parents), skin, arrays.skin_weights, ids(), ids(),
    torch.zeros(0, dtype=torch.float64), verts))
"""


def test_out_of_range_indices_raise_index_errors_in_both_backends(compiled):
    """An out-of-range index in SMPLArrays / SparseRegressor (public NamedTuples) raises IndexError
    naming the array, in the compiled kernels and the reference alike; before, the kernels read or
    wrote out of bounds (segfaults, or silently wrong joints). Run in a subprocess so that a
    regression shows up as a failure here, not as a crashed test run."""
    import json

    result = subprocess.run([sys.executable, "-c", _BAD_INDEX_SCRIPT], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, f"crashed (rc {result.returncode}) after {lines[-1] if lines else 'nothing'}: " \
                                   f"{result.stderr[-2000:]}"
    outcomes = json.loads(lines[-1])
    assert len(outcomes) == 2 * 9 + 4
    for name, (kind, message) in outcomes.items():
        assert kind == "IndexError", (name, kind, message)
        assert "out of range" in message or "ascending" in message, (name, message)
        array = "skin_joints" if "skin" in name else "regressor"
        assert array in message, (name, message)
    assert "must lie in [0, 24)" in outcomes["compiled skin_joints 24"][1]
    assert "must lie in [0, 24)" in outcomes["reference skin_joints 24"][1]
    assert "ascending" in outcomes["reference regressor unsorted"][1]
