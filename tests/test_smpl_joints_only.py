"""The joints-only SMPL path: the model restricted to selected vertices (SMPLArrays.select_vertices),
SMPL(..., return_verts=False / vertex_ids=), and the backward's handling of unused or sparse vertex
gradients (empty grad_vertices, zero column blocks skipped, meshrec's blend product for small batches)."""

from __future__ import annotations

import pytest
import torch

from meshrec.body import SMPL_VERTEX_JOINTS, JointRegressor, mannequin
from meshrec.body.keypoints import KeypointModel, get_layout
from meshrec.ops import SparseRegressor, reference, smpl_lbs
from meshrec.rotations import rodrigues
from meshrec.testing import synthetic_smpl, synthetic_smpl_arrays
from meshrec.testing.fixtures import DEVICES

from test_ops_smpl import TOLERANCE, inputs, regressors

VERTEX_JOINT_IDS = [v for _, v in SMPL_VERTEX_JOINTS]
SUBSET = [6889, 12, 4000, 411, 0, 3500]  # any order


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("templates", [False, True])
def test_selected_model_equals_the_full_model_at_those_vertices(compiled, device, dtype, templates):
    betas, rotations, smpl, kwargs, arrays = inputs(3, dtype, device, seed=4, templates=templates)
    ids = torch.tensor(sorted(set(VERTEX_JOINT_IDS) | set(SUBSET)))
    picker = regressors(arrays, dtype, device)["vertex_joints"]
    vertices, joints = smpl_lbs(betas, rotations, smpl, regressor=picker, **kwargs)
    sub_kwargs = dict(kwargs)
    if templates:
        sub_kwargs["vertex_template"] = kwargs["vertex_template"][:, ids.to(device)]
    sub_vertices, sub_joints = smpl_lbs(betas, rotations, smpl.select_vertices(ids), regressor=picker.select_vertices(ids),
                                        **sub_kwargs)
    assert sub_vertices.shape == (3, len(ids), 3)
    torch.testing.assert_close(sub_vertices, vertices[:, ids.to(device)], atol=TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(sub_joints, joints, atol=TOLERANCE[dtype], rtol=0)


def test_selected_model_reads_only_its_columns(compiled):
    smpl = inputs(1, torch.float64, "cpu")[2]
    sub = smpl.select_vertices(SUBSET)
    assert sub.shapedirs.shape == (10, 3 * len(SUBSET)) and sub.posedirs.shape == (207, 3 * len(SUBSET))
    assert sub.blend_panels.shape == (1, 217, 192)
    assert torch.equal(sub.shapedirs[:, 3:6], smpl.shapedirs[:, 36:39])  # vertex 12 is the second selected
    assert torch.equal(sub.skin_weights, smpl.skin_weights[SUBSET]) and sub.parents == smpl.parents
    empty = smpl.select_vertices([])
    vertices, joints = smpl_lbs(torch.zeros(2, 10, dtype=torch.float64), torch.eye(3, dtype=torch.float64).expand(2, 24, 3, 3),
                                empty)
    assert vertices.shape == (2, 0, 3)
    torch.testing.assert_close(joints, smpl.joint_template.expand(2, 24, 3), atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad, message", [
    ([1, 1], "distinct"), ([-1], r"\[0, 6890\)"), ([6890], r"\[0, 6890\)"), ([[1, 2]], "1-D"), ([0.5], "integer"),
])
def test_select_vertices_bad_input(bad, message):
    smpl = inputs(1, torch.float64, "cpu")[2]
    with pytest.raises(ValueError, match=message):
        smpl.select_vertices(bad)


def test_regressor_of_unselected_vertices_is_refused():
    picker = SparseRegressor.from_vertex_ids([10, 20], 6890, torch.float64)
    with pytest.raises(ValueError, match=r"reads vertices \[20\].*select them too"):
        picker.select_vertices([10, 30])
    moved = picker.select_vertices([30, 20, 10])
    assert moved.num_vertices == 3 and moved.vertex_ids.tolist() == [1, 2] and moved.rows.tolist() == [1, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_selected_model_gradcheck_and_opcheck(compiled, device):
    betas, rotations, smpl, kwargs, arrays = inputs(2, torch.float64, device, seed=2)
    ids = sorted(set(VERTEX_JOINT_IDS) | set(SUBSET))
    sub = smpl.select_vertices(ids)
    picker = regressors(arrays, torch.float64, device)["vertex_joints"].select_vertices(ids)
    axis_angle = (torch.rand(2, 24, 3, dtype=torch.float64) - 0.5).to(device).requires_grad_()
    betas = betas.detach().requires_grad_()
    transl = kwargs["transl"].detach().requires_grad_()

    def forward(betas, axis_angle, transl):
        return smpl_lbs(betas, rodrigues(axis_angle), sub, transl=transl, regressor=picker)

    assert torch.autograd.gradcheck(forward, (betas, axis_angle, transl), fast_mode=True)
    args = (betas, rodrigues(axis_angle).detach().requires_grad_(), transl, sub.v_template[None], sub.joint_template[None],
            sub.shapedirs, sub.posedirs, sub.blend_panels, sub.joint_shapedirs, list(sub.parents), sub.skin_joints,
            sub.skin_weights, picker.vertex_ids, picker.rows, picker.weights, picker.num_rows, True)
    torch.library.opcheck(torch.ops.meshrec.smpl_lbs.default, args)


# ---- the module ------------------------------------------------------------------------------------

def _body_inputs(batch, dtype, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    values = dict(betas=torch.randn(batch, 10, generator=generator, dtype=torch.float64),
                  body_pose=torch.rand(batch, 69, generator=generator, dtype=torch.float64) - 0.5,
                  global_orient=torch.rand(batch, 3, generator=generator, dtype=torch.float64) * 3,
                  transl=torch.randn(batch, 3, generator=generator, dtype=torch.float64))
    return {k: v.to(dtype).requires_grad_(requires_grad) for k, v in values.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [5, 12])  # the narrow model's blend product is meshrec's own at any batch
def test_joints_only_module_equals_the_full_module(dtype, batch):
    model = mannequin.mannequin_smpl(dtype=dtype, create_transl=False)
    values = _body_inputs(batch, dtype, requires_grad=True)
    full = model(**values)
    joints_only = model(**values, return_verts=False)
    assert joints_only.vertices is None and joints_only.joints.shape == (batch, 45, 3)
    torch.testing.assert_close(joints_only.joints, full.joints, atol=TOLERANCE[dtype], rtol=0)
    weights = torch.randn(full.joints.shape, dtype=torch.float64).to(dtype)
    expected = torch.autograd.grad((full.joints * weights).sum(), list(values.values()))
    got = torch.autograd.grad((joints_only.joints * weights).sum(), list(values.values()))
    tolerance = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-4, rtol=1e-4)
    for name, a, b in zip(values, got, expected):
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m: f"{name}: {m}")


def test_vertex_ids_return_those_vertices_in_order():
    model = mannequin.mannequin_smpl(dtype=torch.float64, create_transl=False)
    values = _body_inputs(2, torch.float64, seed=3)
    full = model(**values)
    selected = model(**values, vertex_ids=SUBSET)
    assert selected.vertices.shape == (2, len(SUBSET), 3)
    torch.testing.assert_close(selected.vertices, full.vertices[:, SUBSET], atol=1e-12, rtol=0)
    torch.testing.assert_close(selected.joints, full.joints, atol=1e-12, rtol=0)
    again = model(**values, vertex_ids=torch.tensor(SUBSET))  # a tensor works too, and hits the cache
    assert torch.equal(again.vertices, selected.vertices)
    with pytest.raises(ValueError, match="distinct"):
        model(**values, vertex_ids=[3, 3])
    with pytest.raises(ValueError, match=r"\[0, 6890\)"):
        model(**values, vertex_ids=[7000])


def test_joints_only_follows_a_changed_buffer_and_a_per_call_template():
    model = synthetic_smpl(dtype=torch.float64)
    values = _body_inputs(2, torch.float64, seed=5)
    model(**values, return_verts=False)  # builds and caches the selection
    with torch.no_grad():
        model.posedirs.mul_(1.5)  # the selection must be rebuilt from the edited buffer
    template = model.v_template + 0.01 * torch.randn(6890, 3, dtype=torch.float64)
    full = model(**values, v_template=template)
    joints_only = model(**values, v_template=template, vertex_ids=SUBSET)
    torch.testing.assert_close(joints_only.joints, full.joints, atol=1e-12, rtol=0)
    torch.testing.assert_close(joints_only.vertices, full.vertices[:, SUBSET], atol=1e-12, rtol=0)


def test_keypoint_model_reads_the_regressor_support_only():
    arrays = synthetic_smpl_arrays()
    model = mannequin.mannequin_smpl(dtype=torch.float64, create_transl=False)
    regressor = JointRegressor(mannequin.make_h36m_regressor(arrays))
    keypoints = KeypointModel(get_layout("h36m17"), regressor)
    support = keypoints.vertex_ids
    assert support == tuple(sorted(set(regressor.sparse().vertex_ids.tolist())))
    values = _body_inputs(3, torch.float64, seed=6)
    full = model(**values)
    selected = model(**values, vertex_ids=support)
    torch.testing.assert_close(keypoints(selected.vertices, selected.joints), keypoints(full.vertices, full.joints),
                               atol=1e-12, rtol=0)
    assert KeypointModel(get_layout("openpose25")).vertex_ids is None
    with pytest.raises(ValueError, match="reads vertices"):
        keypoints(None, full.joints)


# ---- the backward with unused and sparse vertex gradients ------------------------------------------

@pytest.mark.parametrize("batch", [1, 3, 8, 9])  # up to 8 meshrec's blend product, from 9 BLAS
def test_sparse_vertex_gradient_matches_reference(compiled, batch):
    betas, rotations, smpl, kwargs, arrays = inputs(batch, torch.float64, "cpu", seed=batch)
    leaves = [betas, rotations, kwargs["transl"]]
    mask = torch.zeros(6890, 1, dtype=torch.float64)
    mask[SUBSET] = 1.0  # a loss reading six vertices: most column blocks get no gradient
    weights = torch.randn(batch, 6890, 3, dtype=torch.float64) * mask
    grads = []
    for fn in (smpl_lbs, reference.smpl_lbs):
        copies = [x.detach().clone().requires_grad_() for x in leaves]
        vertices, joints = fn(copies[0], copies[1], smpl, transl=copies[2])
        grads.append(torch.autograd.grad((vertices * weights).sum() + joints[:, 3].sum(), copies))
    for name, got, expected in zip(("betas", "rotations", "transl"), *grads):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("batch", [2, 12])
def test_unused_vertices_give_the_zero_gradient_result(compiled, batch):
    """A loss on joints only: autograd hands the op no vertex gradient; the result equals the
    reference's, and the backward op takes an empty grad_vertices as zeros (same values as a
    buffer of zeros)."""
    betas, rotations, smpl, kwargs, arrays = inputs(batch, torch.float64, "cpu", seed=1)
    picker = regressors(arrays, torch.float64, "cpu")["vertex_joints"]
    grads = []
    for fn in (smpl_lbs, reference.smpl_lbs):
        copies = [x.detach().clone().requires_grad_() for x in (betas, rotations)]
        _, joints = fn(copies[0], copies[1], smpl, regressor=picker)
        grads.append(torch.autograd.grad((joints ** 2).sum(), copies))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    args = (betas, rotations, None, smpl.v_template[None], smpl.joint_template[None], smpl.shapedirs, smpl.posedirs,
            smpl.blend_panels, smpl.joint_shapedirs, list(smpl.parents), smpl.skin_joints, smpl.skin_weights,
            picker.vertex_ids, picker.rows, picker.weights, picker.num_rows, True)
    vertices, joints, posed = torch.ops.meshrec.smpl_lbs(*args)
    grad_joints = torch.randn_like(joints)
    rest = (grad_joints, betas, rotations, args[4], smpl.shapedirs, smpl.posedirs, smpl.joint_shapedirs,
            list(smpl.parents), smpl.skin_joints, smpl.skin_weights, picker.vertex_ids, picker.rows, picker.weights,
            posed)
    with_empty = torch.ops.meshrec.smpl_lbs_backward(vertices.new_empty(0), *rest)
    with_zeros = torch.ops.meshrec.smpl_lbs_backward(torch.zeros_like(vertices), *rest)
    for a, b in zip(with_empty, with_zeros):
        assert torch.equal(a, b)
    torch.library.opcheck(torch.ops.meshrec.smpl_lbs_backward.default, (vertices.new_empty(0), *rest))
    with pytest.raises(RuntimeError, match=r"grad_vertices must have shape \(B, V, 3\), or empty"):
        torch.ops.meshrec.smpl_lbs_backward(torch.zeros(batch, 5, 3, dtype=torch.float64), *rest)


# ---- the fitter ------------------------------------------------------------------------------------

def test_fit_computes_the_mesh_only_for_its_result(monkeypatch):
    """Without scene terms the fit's loss reads joints only: every call but the last takes the
    joints-only path, and the fitted joints equal a fit on the full path to rounding."""
    fitting = pytest.importorskip("meshrec_fit.fitting")
    from meshrec.body import SMPL

    model = mannequin.mannequin_smpl(dtype=torch.float64, create_transl=False)
    keypoint_model = KeypointModel(get_layout("openpose25"))
    values = _body_inputs(1, torch.float64, seed=8)
    values["body_pose"] = values["body_pose"] * 0.3
    values["global_orient"] = torch.tensor([[3.1, 0.0, 0.0]], dtype=torch.float64)
    values["transl"] = torch.tensor([[0.0, 0.2, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        truth = model(**values)
    intrinsics = torch.tensor([[[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]]], dtype=torch.float64)
    points = keypoint_model(truth.vertices, truth.joints) @ intrinsics[0].T
    keypoints = torch.cat([points[..., :2] / points[..., 2:], torch.ones_like(points[..., :1])], dim=-1)
    config = fitting.FitConfig.schedule("fast")

    calls = []
    original = SMPL._forward

    def spy(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls.append(output.vertices is not None and output.vertices.shape[1] == 6890)
        return output

    monkeypatch.setattr(SMPL, "_forward", spy)
    fitted = fitting.fit_smpl(model, keypoint_model, keypoints, intrinsics, config)
    assert calls.count(True) == 1 and calls[-1] and len(calls) > 50
    assert fitted.vertices.shape == (1, 6890, 3)

    monkeypatch.setattr(fitting._Problem, "body", lambda self, mesh=False: (lambda out: (out.vertices, out.joints))(
        self.body_model(betas=self.betas.repeat(self.frames, 1), global_orient=self.global_orient,
                        body_pose=self.body_pose, transl=self.transl)))
    full_path = fitting.fit_smpl(model, keypoint_model, keypoints, intrinsics, config)
    torch.testing.assert_close(fitted.joints, full_path.joints, atol=1e-6, rtol=0)
