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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gender", ["neutral", "male", "female"])
def test_matches_smplx_rotation_matrices(body_models_dir, dtype, gender):
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


@pytest.mark.parametrize("use_pca", [True, False])
def test_smplh_matches_smplx(body_models_dir, exact_smplx_rodrigues, use_pca):
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


def test_empty_batch(body_models_dir):
    model = SMPL(body_models_dir)
    out = model(betas=torch.zeros(0, 10), body_pose=torch.zeros(0, 69), global_orient=torch.zeros(0, 3),
                transl=torch.zeros(0, 3))
    assert out.vertices.shape == (0, 6890, 3) and out.joints.shape == (0, 45, 3)


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
