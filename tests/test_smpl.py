"""meshrec.body.SMPL / SMPLH against smplx on synthetic SMPL-format models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec.body import SMPL, SMPLH, SMPL_OUTPUT_JOINT_NAMES, load_body_model_arrays
from meshrec.body.files import smpl_file_names
from meshrec.rotations import rodrigues

smplx = pytest.importorskip("smplx")
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def random_axis_angles(batch: int, joints: int, dtype, seed=0) -> torch.Tensor:
    """Random joint rotations with angles over [0, pi], including near-zero and near-pi ones."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(batch, joints, 3, generator=generator, dtype=torch.float64), dim=-1)
    angles = torch.rand(batch, joints, 1, generator=generator, dtype=torch.float64) * math.pi
    angles[0, ::3] = 1e-7
    angles[0, 1::3] = math.pi - 1e-7
    return (axes * angles).to(dtype)


def random_betas(batch: int, count: int, dtype, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)
    betas = (torch.rand(batch, count, generator=generator, dtype=torch.float64) * 10 - 5).to(dtype)
    betas[0] = 5.0
    betas[1 % batch] = -5.0
    return betas


def smplx_model(cls, folder, file, dtype, **kwargs):
    arrays = load_body_model_arrays(file)
    return cls(model_path=str(folder), data_struct=smplx.utils.Struct(**arrays), dtype=dtype, **kwargs)


@pytest.fixture
def exact_smplx_rodrigues(monkeypatch):
    """smplx with meshrec's exact Rodrigues instead of its angle+1e-8 version, so that whole-model
    parity in axis-angle is tested to rounding error (the difference itself is tested in
    test_ops_rotation)."""
    monkeypatch.setattr(smplx.lbs, "batch_rodrigues", lambda w: rodrigues(w.reshape(-1, 3)))


@pytest.fixture
def float64_smplx(monkeypatch):
    """smplx passes every model array through float32 (``to_np``'s default dtype); keep them in
    float64 so that float64 parity measures the maths, not that rounding."""
    import scipy.sparse

    def to_np(array, dtype=np.float64):
        if scipy.sparse.issparse(array):
            array = array.toarray()
        return np.array(array, dtype=np.float64 if np.issubdtype(np.asarray(array).dtype, np.floating) else dtype)

    monkeypatch.setattr(smplx.body_models, "to_np", to_np)


@pytest.fixture(params=["compiled", "reference"])
def backend(request, monkeypatch):
    """Runs a test with the compiled kernels (skipped when meshrec._C is not in use) and with the
    pure-PyTorch reference, by switching the one place that chooses (the op wrappers)."""
    if request.param == "compiled":
        from meshrec.testing.fixtures import requires_compiled_ops

        requires_compiled_ops()
    else:
        import meshrec.ops.smpl
        import meshrec.rotations

        monkeypatch.setattr(meshrec.ops.smpl, "use_compiled", lambda tensor: False)
        monkeypatch.setattr(meshrec.rotations, "use_compiled", lambda tensor: False)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gender", ["neutral", "male", "female"])
def test_matches_smplx_rotation_matrices(body_models_dir, backend, dtype, gender):
    ours = SMPL(body_models_dir, gender=gender, dtype=dtype)
    reference = smplx_model(smplx.SMPL, body_models_dir, ours.model_file, dtype, gender=gender)
    batch = 16
    pose = rodrigues(random_axis_angles(batch, 24, dtype))
    betas = random_betas(batch, 10, dtype)
    transl = torch.randn(batch, 3, dtype=dtype)
    kwargs = dict(betas=betas, global_orient=pose[:, :1], body_pose=pose[:, 1:], transl=transl, pose2rot=False)
    a, b = ours(**kwargs), reference(**kwargs)
    assert a.vertices.shape == (batch, 6890, 3) and a.joints.shape == (batch, 45, 3)
    torch.testing.assert_close(a.vertices, b.vertices, atol=TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(a.joints, b.joints, atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_smplx_axis_angle(body_models_dir, exact_smplx_rodrigues, dtype):
    ours = SMPL(body_models_dir, dtype=dtype)
    reference = smplx_model(smplx.SMPL, body_models_dir, ours.model_file, dtype)
    pose = random_axis_angles(32, 24, dtype, seed=3).reshape(32, 72)
    betas = random_betas(32, 10, dtype, seed=3)
    kwargs = dict(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:], return_full_pose=True)
    a, b = ours(**kwargs), reference(**kwargs)
    torch.testing.assert_close(a.vertices, b.vertices, atol=TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(a.joints, b.joints, atol=TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(a.full_pose, b.full_pose)


def test_axis_angle_differs_from_stock_smplx_only_by_its_epsilon(body_models_dir):
    ours = SMPL(body_models_dir, dtype=torch.float64)
    reference = smplx_model(smplx.SMPL, body_models_dir, ours.model_file, torch.float64)
    pose = random_axis_angles(8, 24, torch.float64).reshape(8, 72)
    a = ours(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    b = reference(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    difference = (a.vertices - b.vertices).abs().max().item()
    assert 0 < difference < 1e-6


def test_kid_template_matches_smplx(body_models_dir, float64_smplx):
    kid = body_models_dir / "smpl_kid_template.npy"
    ours = SMPL(body_models_dir, dtype=torch.float64, age="kid", kid_template_path=kid)
    reference = smplx_model(smplx.SMPL, body_models_dir, ours.model_file, torch.float64, age="kid",
                            kid_template_path=str(kid))
    assert ours.num_betas == reference.num_betas == 11
    pose = rodrigues(random_axis_angles(4, 24, torch.float64))
    betas = random_betas(4, 11, torch.float64)
    kwargs = dict(betas=betas, global_orient=pose[:, :1], body_pose=pose[:, 1:], pose2rot=False)
    torch.testing.assert_close(ours(**kwargs).vertices, reference(**kwargs).vertices, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="kid_template_path"):
        SMPL(body_models_dir, age="kid")


def test_damaged_kid_template_is_refused(body_models_dir, tmp_path):
    damaged = np.load(body_models_dir / "smpl_kid_template.npy")
    damaged[5, 1] = np.nan
    np.save(tmp_path / "smpl_kid_template.npy", damaged)
    with pytest.raises(ValueError, match=r"smpl_kid_template.npy: the kid template holds 1 NaN or infinite"):
        SMPL(body_models_dir, age="kid", kid_template_path=tmp_path / "smpl_kid_template.npy")


@pytest.mark.parametrize("use_pca", [True, False])
def test_smplh_matches_smplx(body_models_dir, backend, exact_smplx_rodrigues, use_pca):
    dtype = torch.float64
    ours = SMPLH(body_models_dir, dtype=dtype, use_pca=use_pca, num_pca_comps=12)
    reference = smplx_model(smplx.SMPLH, body_models_dir, ours.model_file, dtype, use_pca=use_pca, num_pca_comps=12)
    batch = 6
    generator = torch.Generator().manual_seed(5)
    width = 12 if use_pca else 45
    kwargs = dict(
        betas=random_betas(batch, 10, dtype),
        global_orient=random_axis_angles(batch, 1, dtype).reshape(batch, 3),
        body_pose=random_axis_angles(batch, 21, dtype, seed=2).reshape(batch, 63),
        left_hand_pose=torch.randn(batch, width, generator=generator, dtype=dtype) * 0.5,
        right_hand_pose=torch.randn(batch, width, generator=generator, dtype=dtype) * 0.5,
        transl=torch.randn(batch, 3, generator=generator, dtype=dtype),
    )
    a, b = ours(**kwargs), reference(**kwargs)
    assert a.joints.shape == b.joints.shape == (batch, 52 + 21, 3)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.joints, b.joints, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.left_hand_pose, b.left_hand_pose)


def test_outputs_and_mapping_access(body_models_dir):
    model = SMPL(body_models_dir)
    out = model()
    assert out.vertices.shape == (1, 6890, 3) and out.joints.shape == (1, 45, 3)
    assert out["vertices"] is out.vertices and out.get("missing") is None
    assert set(out.keys()) >= {"vertices", "joints", "betas", "full_pose", "transl", "v_shaped"}
    assert len(SMPL_OUTPUT_JOINT_NAMES) == 45
    assert model.faces.shape == (13776, 3) and model.faces_tensor.dtype == torch.long
    nose = SMPL_OUTPUT_JOINT_NAMES.index("nose")
    torch.testing.assert_close(out.joints[0, nose], out.vertices[0, 332])


def test_files_npz_and_pkl_give_the_same_model(body_models_dir, tmp_path):
    from meshrec.testing import write_synthetic_smpl

    npz = write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.npz", file_format="npz")
    pose = random_axis_angles(3, 24, torch.float64).reshape(3, 72)
    a = SMPL(body_models_dir, dtype=torch.float64)(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    b = SMPL(npz, dtype=torch.float64)(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    torch.testing.assert_close(a.vertices, b.vertices, atol=0, rtol=0)


def test_model_path_from_environment(body_models_dir, monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(body_models_dir))
    assert SMPL().model_file == body_models_dir / "SMPL_NEUTRAL.pkl"
    monkeypatch.setenv("MESHREC_BODY_MODELS", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent-home")
    with pytest.raises(FileNotFoundError, match="smpl.is.tue.mpg.de"):
        SMPL()


def test_broadcasting_and_defaults(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64)
    pose = random_axis_angles(4, 23, torch.float64).reshape(4, 69)
    betas = random_betas(1, 10, torch.float64)
    out = model(betas=betas, body_pose=pose)  # global_orient, transl: batch-1 parameters
    assert out.vertices.shape == (4, 6890, 3)
    expected = model(betas=betas.expand(4, -1), body_pose=pose, global_orient=torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(out.vertices, expected.vertices)
    few = model(betas=betas[:, :3])  # fewer betas are zero-padded
    torch.testing.assert_close(few.vertices, model(betas=torch.nn.functional.pad(betas[:, :3], (0, 7))).vertices)


def test_empty_batch(body_models_dir, backend):
    model = SMPL(body_models_dir)
    out = model(betas=torch.zeros(0, 10), body_pose=torch.zeros(0, 69), global_orient=torch.zeros(0, 3),
                transl=torch.zeros(0, 3))
    assert out.vertices.shape == (0, 6890, 3) and out.joints.shape == (0, 45, 3)
    # The module's batch-1 default parameters (betas, global_orient, transl) broadcast to batch 0.
    out = model(body_pose=torch.zeros(0, 69), return_full_pose=True, return_shaped=True)
    assert out.vertices.shape == (0, 6890, 3) and out.joints.shape == (0, 45, 3)
    assert out.transl.shape == (0, 3) and out.betas.shape == (0, 10) and out.full_pose.shape == (0, 72)
    assert out.v_shaped.shape == (0, 6890, 3)
    mapped = SMPL(body_models_dir, joint_mapper=lambda joints: joints[:, :24])
    rotations = torch.eye(3).expand(0, 24, 3, 3)
    assert mapped(global_orient=rotations[:, :1], body_pose=rotations[:, 1:], pose2rot=False).joints.shape == (0, 24, 3)
    rows = model(betas=torch.zeros(0, 10), v_template=model.v_template)  # a shared (V, 3) template too
    assert rows.vertices.shape == (0, 6890, 3)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        model(body_pose=torch.zeros(0, 69), betas=torch.zeros(2, 10))


def test_translation_and_joint_mapper(body_models_dir):
    model = SMPL(body_models_dir, joint_mapper=lambda joints: joints[:, :24], create_transl=False)
    base = model()
    assert base.joints.shape == (1, 24, 3) and base.transl is None
    shift = torch.tensor([[1.0, 2.0, 3.0]])
    moved = model(transl=shift)
    torch.testing.assert_close(moved.vertices, base.vertices + shift[:, None])
    torch.testing.assert_close(moved.joints, base.joints + shift[:, None])


def test_pose_layouts_are_equivalent(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64)
    aa = random_axis_angles(2, 24, torch.float64)
    rotations = rodrigues(aa)
    reference = model(global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(2, 69)).vertices
    for global_orient, body_pose in ((aa[:, :1], aa[:, 1:]),):
        torch.testing.assert_close(model(global_orient=global_orient.reshape(2, 3), body_pose=body_pose).vertices, reference)
    for global_orient, body_pose in ((rotations[:, 0], rotations[:, 1:]), (rotations[:, :1].reshape(2, 9),
                                                                         rotations[:, 1:].reshape(2, 207))):
        torch.testing.assert_close(model(global_orient=global_orient, body_pose=body_pose, pose2rot=False).vertices,
                                   reference)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(body_pose=torch.zeros(2, 70)), ValueError, r"body_pose must be axis-angle of shape \(B, 69\)"),
        (dict(global_orient=torch.zeros(2, 3, 3)), ValueError, r"global_orient must be axis-angle"),
        (dict(body_pose=torch.zeros(2, 23, 3), global_orient=torch.zeros(2, 3, 3), pose2rot=False), ValueError, r"body_pose must be rotation matrices of shape \(B, 23, 3, 3\)"),
        (dict(betas=torch.zeros(2, 11)), ValueError, r"betas must have shape \(B, 10\)"),
        (dict(transl=torch.zeros(2, 2)), ValueError, r"transl must have shape \(B, 3\)"),
        (dict(body_pose=torch.zeros(2, 69, dtype=torch.float64)), TypeError, "body_pose has dtype torch.float64 but the model holds torch.float32"),
        (dict(body_pose=torch.full((1, 69), float("nan"))), ValueError, "body_pose contains NaN"),
        (dict(betas=torch.tensor([[float("inf")] * 10])), ValueError, "betas contains NaN or infinite"),
        (dict(body_pose=torch.zeros(2, 69), global_orient=torch.zeros(3, 3)), ValueError, "batch sizes disagree"),
        (dict(body_pose=np.zeros((1, 69))), TypeError, "body_pose must be a torch.Tensor"),
        (dict(bodypose=torch.zeros(1, 69)), TypeError, "unexpected keyword arguments: \\['bodypose'\\]"),
        (dict(body_pose=torch.zeros(1, 69, device="meta")), ValueError, "body_pose is on meta but the model is on cpu"),
    ],
)
def test_bad_inputs_name_the_argument(body_models_dir, kwargs, error, message):
    model = SMPL(body_models_dir)
    with pytest.raises(error, match=message):
        model(**kwargs)


def test_bad_construction(body_models_dir, tmp_path):
    with pytest.raises(ValueError, match="num_betas=20 but .* has only 10"):
        SMPL(body_models_dir, num_betas=20)
    with pytest.raises(TypeError, match="dtype must be"):
        SMPL(body_models_dir, dtype=torch.float16)
    with pytest.raises(TypeError, match="unexpected keyword"):
        SMPL(body_models_dir, num_beta=10)
    arrays = load_body_model_arrays(body_models_dir / "SMPL_NEUTRAL.pkl")
    del arrays["posedirs"]
    with pytest.raises(ValueError, match=r"missing keys \['posedirs'\]"):
        SMPL(data_struct=arrays)
    arrays = load_body_model_arrays(body_models_dir / "SMPL_NEUTRAL.pkl")
    arrays["weights"] = arrays["weights"][:, :20]
    with pytest.raises(ValueError, match="'weights' has shape"):
        SMPL(data_struct=arrays)


def test_gradcheck_through_the_model(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64, create_transl=False)
    inputs = (random_betas(2, 10, torch.float64), random_axis_angles(2, 1, torch.float64).reshape(2, 3),
              random_axis_angles(2, 23, torch.float64).reshape(2, 69) * 0.5, torch.randn(2, 3, dtype=torch.float64))
    inputs = tuple(x.clone().requires_grad_() for x in inputs)

    def forward(betas, global_orient, body_pose, transl):
        out = model(betas=betas, global_orient=global_orient, body_pose=body_pose, transl=transl)
        return out.vertices[:, ::97], out.joints

    assert torch.autograd.gradcheck(forward, inputs, fast_mode=True)


def test_torch_compile_of_a_module_calling_smpl(body_models_dir):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.smpl = SMPL(body_models_dir)

        def forward(self, pose, betas):
            return self.smpl(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:]).joints

    module = Wrapper()
    pose, betas = random_axis_angles(3, 24, torch.float32).reshape(3, 72), random_betas(3, 10, torch.float32)
    compiled = torch.compile(module, backend="aot_eager")
    torch.testing.assert_close(compiled(pose, betas), module(pose, betas))


def test_all_official_names_are_searched():
    assert "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl" in smpl_file_names("neutral")
    assert "basicmodel_m_lbs_10_207_0_v1.1.0.pkl" in smpl_file_names("male")


# ---- the kernels' arrays follow the module's buffers --------------------------------------------

def _edited_arrays(arrays: dict, name: str) -> dict:
    """The file's arrays with one of them changed as an in-place edit of the SMPL buffer would."""
    import scipy.sparse

    generator = np.random.default_rng(7)
    arrays = dict(arrays)
    if name == "v_template":
        arrays[name] = arrays[name] + 0.02 * generator.standard_normal(arrays[name].shape)
    elif name == "shapedirs":
        arrays[name] = 1.5 * arrays[name][:, :, ::-1]
    elif name == "posedirs":
        arrays[name] = arrays[name] + 0.01 * generator.standard_normal(arrays[name].shape)
    elif name == "J_regressor":
        dense = arrays[name].toarray() if scipy.sparse.issparse(arrays[name]) else np.asarray(arrays[name])
        arrays[name] = np.roll(dense, 40, axis=1)  # other vertices, another sparsity pattern
    elif name == "weights":
        weights = np.asarray(arrays[name]).copy()
        weights[:, 3] += 0.5  # every vertex gains joint 3 (a wider sparse skinning)
        arrays[name] = weights / weights.sum(axis=1, keepdims=True)
    return arrays


def _buffer_value(model: SMPL, name: str, arrays: dict) -> torch.Tensor:
    """The module buffer's layout of the file array ``name``."""
    import scipy.sparse

    value = arrays[name]
    value = value.toarray() if scipy.sparse.issparse(value) else np.asarray(value)
    if name == "posedirs":
        value = value.reshape(-1, value.shape[-1]).T
    return torch.as_tensor(np.ascontiguousarray(value), dtype=model.v_template.dtype)


@pytest.mark.parametrize("name", ["v_template", "shapedirs", "posedirs", "J_regressor", "weights"])
def test_in_place_buffer_edits_are_seen(body_models_dir, backend, name):
    """An in-place edit of a model buffer changes the next call as if the model had been built
    from the edited arrays (before, the compiled kernels kept arrays derived at construction:
    an edited v_template moved the vertices but not the joints; other edits were ignored)."""
    arrays = load_body_model_arrays(body_models_dir / "SMPL_NEUTRAL.pkl")
    edited = _edited_arrays(arrays, name)
    model = SMPL(data_struct=arrays, dtype=torch.float64)
    expected_model = SMPL(data_struct=edited, dtype=torch.float64)
    pose = rodrigues(random_axis_angles(3, 24, torch.float64, seed=4))
    kwargs = dict(betas=random_betas(3, 10, torch.float64), global_orient=pose[:, :1], body_pose=pose[:, 1:],
                  pose2rot=False)
    before = model(**kwargs)
    buffer = "lbs_weights" if name == "weights" else name
    with torch.no_grad():
        getattr(model, buffer).copy_(_buffer_value(model, name, edited))
    got, expected = model(**kwargs), expected_model(**kwargs)
    assert not torch.allclose(got.joints, before.joints, atol=1e-6) or name in ("posedirs", "weights")
    assert not torch.allclose(got.vertices, before.vertices, atol=1e-6)
    torch.testing.assert_close(got.vertices, expected.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.joints, expected.joints, atol=1e-12, rtol=0)


def test_replaced_buffers_and_parents_are_seen(body_models_dir, backend):
    model = SMPL(body_models_dir, dtype=torch.float64)
    pose = random_axis_angles(2, 24, torch.float64).reshape(2, 72)
    kwargs = dict(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    model(**kwargs)
    model.v_template = model.v_template + 0.1  # a new tensor, not an in-place edit
    moved = model(**kwargs)
    expected = SMPL(body_models_dir, dtype=torch.float64, v_template=model.v_template)(**kwargs)
    torch.testing.assert_close(moved.vertices, expected.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(moved.joints, expected.joints, atol=1e-12, rtol=0)
    with torch.no_grad():
        model.extra_joints_idxs[0] = 0  # the nose joint now sits on vertex 0
    torch.testing.assert_close(model(**kwargs).joints[:, 24], model(**kwargs).vertices[:, 0])


def test_learnable_template_offset_fits_and_backends_agree(body_models_dir, backend):
    """Fitting v_template offsets: the template as an nn.Parameter that an optimiser steps in
    place. Each step's output equals a model built from the current template, and the gradient
    reaches the template through the vertices and the rest joints."""
    model = SMPL(body_models_dir, dtype=torch.float64, create_transl=False)
    target = SMPL(body_models_dir, dtype=torch.float64, create_transl=False,
                  v_template=model.v_template + 0.01 * torch.randn(6890, 3, dtype=torch.float64,
                                                                   generator=torch.Generator().manual_seed(2)))
    pose = random_axis_angles(2, 24, torch.float64, seed=5).reshape(2, 72) * 0.5
    kwargs = dict(global_orient=pose[:, :3], body_pose=pose[:, 3:])
    with torch.no_grad():
        goal = target(**kwargs)
    model.v_template = torch.nn.Parameter(model.v_template.clone())
    optimiser = torch.optim.Adam([model.v_template], lr=2e-3)
    losses = []
    for _ in range(5):
        out = model(**kwargs)
        loss = (out.vertices - goal.vertices).square().sum() + (out.joints - goal.joints).square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        fresh = SMPL(body_models_dir, dtype=torch.float64, create_transl=False, v_template=model.v_template.detach())
        with torch.no_grad():
            now, expected = model(**kwargs), fresh(**kwargs)
        torch.testing.assert_close(now.joints, expected.joints, atol=1e-12, rtol=0)
        torch.testing.assert_close(now.vertices, expected.vertices, atol=1e-12, rtol=0)
    assert losses[-1] < 0.5 * losses[0]

    def joints_of(template):
        out = torch.func.functional_call(model, {"v_template": template}, kwargs=kwargs)
        return out.vertices[:, ::211], out.joints

    template = model.v_template.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(joints_of, (template,), fast_mode=True)


def test_template_edited_under_no_grad_in_a_loop(body_models_dir, backend):
    model = SMPL(body_models_dir, dtype=torch.float64)
    start = model.v_template.clone()
    for step in range(3):
        with torch.no_grad():
            model.v_template.add_(0.01)
        out = model()
        expected = SMPL(body_models_dir, dtype=torch.float64, v_template=start + 0.01 * (step + 1))()
        torch.testing.assert_close(out.joints, expected.joints, atol=1e-12, rtol=0)


def test_state_dict_and_device_moves_keep_the_arrays_in_step(body_models_dir, backend):
    model = SMPL(body_models_dir, dtype=torch.float64)
    other = SMPL(body_models_dir, gender="female", dtype=torch.float64)
    pose = random_axis_angles(2, 23, torch.float64).reshape(2, 69)
    model(body_pose=pose)
    with torch.inference_mode():  # derived arrays rebuilt in inference mode still serve autograd later
        model.load_state_dict(other.state_dict())
        model(body_pose=pose)
    betas = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
    out = model(body_pose=pose, betas=betas)
    out.joints.sum().backward()
    assert betas.grad is not None
    torch.testing.assert_close(out.joints, other(body_pose=pose, betas=betas).joints, atol=1e-12, rtol=0)
    single = model.float()
    torch.testing.assert_close(single(body_pose=pose.float()).joints, other(body_pose=pose).joints.float(),
                               atol=1e-5, rtol=0)


def test_trainable_model_arrays_other_than_the_template_are_refused(body_models_dir):
    model = SMPL(body_models_dir)
    model.shapedirs.requires_grad_()
    with pytest.raises(ValueError, match="shapedirs require a gradient.*v_template offset"):
        model()
    with torch.no_grad():
        assert model().vertices.shape == (1, 6890, 3)


def test_one_check_per_input_and_one_op_path(body_models_dir, backend, monkeypatch):
    """The module checks each input once itself, then calls the ops' unchecked entries: the
    public, checking wrappers (and their second round of checks) are not on its path."""
    import sys

    import meshrec.ops.smpl
    import meshrec.rotations

    model = SMPL(body_models_dir, dtype=torch.float64)
    template = model.v_template.clone()
    model(body_pose=torch.zeros(2, 69, dtype=torch.float64), v_template=template)  # derive the arrays first
    checking = {function.__code__: name for name, function in (
        ("rodrigues", meshrec.rotations.rodrigues), ("smpl_lbs", meshrec.ops.smpl.smpl_lbs),
        ("joint_regression", meshrec.ops.smpl.joint_regression), ("_check_tensor", meshrec.ops.smpl._check_tensor))}
    entered, checked = [], []

    def profile(frame, event, arg):
        if event == "call":
            if frame.f_code in checking:
                entered.append(checking[frame.f_code])
            elif frame.f_code is SMPL._check_input.__code__:
                checked.append(frame.f_locals["name"])

    sys.setprofile(profile)
    try:
        out = model(body_pose=torch.zeros(2, 69, dtype=torch.float64), v_template=template)
    finally:
        sys.setprofile(None)
    assert out.vertices.shape == (2, 6890, 3)
    assert entered == []
    assert sorted(checked) == ["betas", "body_pose", "global_orient", "transl", "v_template"]


def test_h36m_keypoints_are_regressed_sparsely_in_the_vertices_dtype(body_models_dir):
    from meshrec.body import JointRegressor, KeypointModel, get_layout, load_joint_regressor

    dense = load_joint_regressor("J_regressor_h36m.npy", body_models_dir)
    model = SMPL(body_models_dir, dtype=torch.float64)
    out = model(body_pose=random_axis_angles(2, 23, torch.float64).reshape(2, 69))
    expected = np.einsum("jv,bvc->bjc", dense, out.vertices.detach().numpy())  # float64 oracle
    for regressor in (dense, torch.as_tensor(dense, dtype=torch.float32), JointRegressor(dense)):
        keypoints = KeypointModel(get_layout("h36m17"), regressor)
        assert isinstance(keypoints.h36m_regressor, JointRegressor)
        got = keypoints(out.vertices, out.joints)
        assert got.dtype == torch.float64
        # float32 regressor weights, float64 arithmetic
        np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-7, rtol=0)


def test_compiled_call_sees_an_edited_template(body_models_dir):
    model = SMPL(body_models_dir, dtype=torch.float64)
    pose = random_axis_angles(2, 23, torch.float64).reshape(2, 69)
    compiled = torch.compile(lambda body_pose: model(body_pose=body_pose).joints, backend="aot_eager")
    compiled(pose)
    with torch.no_grad():
        model.v_template.add_(0.05)
    expected = SMPL(body_models_dir, dtype=torch.float64, v_template=model.v_template)(body_pose=pose).joints
    torch.testing.assert_close(compiled(pose), expected, atol=1e-12, rtol=0)
