"""Tests of the synthetic SMPL-format body models (meshrec.body.mannequin)."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from meshrec.body import constants, mannequin

V, F = 6890, 13776

# Approximate SMPL neutral rest skeleton (metres), for plausibility checks only.
REFERENCE_JOINTS = np.array([
    [0, -0.24, 0.03], [0.06, -0.33, 0.02], [-0.06, -0.33, 0.02], [0, -0.12, 0.0],
    [0.10, -0.71, 0.015], [-0.10, -0.71, 0.015], [0.01, 0.02, 0.03], [0.09, -1.115, -0.026],
    [-0.09, -1.115, -0.026], [0, 0.07, 0.035], [0.12, -1.17, 0.095], [-0.12, -1.17, 0.095],
    [0, 0.285, 0.012], [0.077, 0.195, 0.02], [-0.077, 0.195, 0.02], [0.005, 0.35, 0.062],
    [0.171, 0.222, 0.005], [-0.171, 0.222, 0.005], [0.43, 0.212, -0.02], [-0.43, 0.212, -0.02],
    [0.688, 0.22, -0.01], [-0.688, 0.22, -0.01], [0.773, 0.211, -0.022], [-0.773, 0.211, -0.022],
])

SMPL_KEYS = {
    "v_template", "f", "J_regressor", "J_regressor_prior", "J", "kintree_table", "weights",
    "weights_prior", "posedirs", "shapedirs", "bs_style", "bs_type", "pose_training_info",
}


@pytest.fixture(scope="module")
def smpl():
    return mannequin.make_smpl_arrays()


@pytest.fixture(scope="module")
def smplh():
    return mannequin.make_smplh_arrays()


def _surface_edges(arrays):
    """Edges of the visible surface: the 6-triangle tubes that join the parts
    (hidden inside the body) connect different parts and are left out."""
    f = arrays["f"].astype(np.int64)[~mannequin._topology().is_join]
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


def _dense(m):
    return m.toarray() if scipy.sparse.issparse(m) else np.asarray(m)


# --------------------------------------------------------------------------- keys, shapes


@pytest.mark.parametrize("gender", ["neutral", "male", "female"])
def test_smpl_keys_shapes_dtypes(gender):
    a = mannequin.make_smpl_arrays(gender)
    expected = SMPL_KEYS | ({"vert_sym_idxs"} if gender != "neutral" else set())
    assert set(a) == expected
    shapes = {
        "v_template": ((V, 3), np.float64), "f": ((F, 3), np.uint32), "J": ((24, 3), np.float64),
        "kintree_table": ((2, 24), np.int64), "weights": ((V, 24), np.float64),
        "weights_prior": ((V, 24), np.float64), "posedirs": ((V, 3, 207), np.float64),
        "shapedirs": ((V, 3, 10), np.float64),
    }
    for key, (shape, dtype) in shapes.items():
        assert a[key].shape == shape, key
        assert a[key].dtype == dtype, key
        assert type(a[key]) is np.ndarray, key
    for key in ("J_regressor", "J_regressor_prior"):
        assert isinstance(a[key], scipy.sparse.csc_matrix)
        assert a[key].shape == (24, V) and a[key].dtype == np.float64
    assert a["bs_style"] == "lbs" and a["bs_type"] == "lrotmin"
    assert isinstance(a["pose_training_info"], dict)
    assert a["kintree_table"][0, 0] == 2**32 - 1
    assert a["kintree_table"][0, 1:].tolist() == list(mannequin.SMPL_PARENTS[1:])
    assert a["kintree_table"][1].tolist() == list(range(24))
    if gender != "neutral":
        sym = a["vert_sym_idxs"]
        assert sym.shape == (V,) and sym.dtype == np.int64
        v = a["v_template"]
        assert np.abs(v[sym] - v * [-1, 1, 1]).max() < 1e-3
        assert np.array_equal(sym[sym], np.arange(V))


def test_names_and_landmarks_are_the_body_constants():
    """The mannequin writes SMPL's layout: its joint names and landmark vertex ids are
    meshrec.body.constants' (one copy), and its kinematic trees follow those names."""
    assert mannequin.SMPL_JOINT_NAMES is constants.SMPL_JOINT_NAMES
    assert mannequin.SMPLH_JOINT_NAMES is constants.SMPLH_JOINT_NAMES
    assert mannequin.VERTEX_LANDMARKS == dict(constants.SMPL_VERTEX_JOINTS)
    arrays = mannequin.make_smpl_arrays()
    assert tuple(int(p) if p < 2**31 else -1 for p in arrays["kintree_table"][0]) == mannequin.SMPL_PARENTS
    names, parents = constants.SMPLH_JOINT_NAMES, mannequin.SMPLH_PARENTS
    assert len(parents) == len(names) == 52
    for child, parent in enumerate(parents[22:], start=22):
        side, joint = names[child].split("_", 1)
        if joint.endswith("1"):
            assert names[parent] == f"{side}_wrist", names[child]
        else:
            assert names[parent] == f"{side}_{joint[:-1]}{int(joint[-1]) - 1}", names[child]
    assert len(mannequin.H36M_JOINT_NAMES) == 17 and len(mannequin.EXTRA_JOINT_NAMES) == 9


def test_invalid_gender():
    with pytest.raises(ValueError):
        mannequin.make_smpl_arrays("robot")


# --------------------------------------------------------------------------- mesh


def test_mesh_closed_manifold_genus0(smpl):
    v, f = smpl["v_template"], smpl["f"].astype(np.int64)
    assert f.min() == 0 and f.max() == V - 1
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # consistently oriented: every directed edge exactly once ...
    assert len(np.unique(directed, axis=0)) == len(directed)
    # ... and every undirected edge shared by exactly two faces
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert (counts == 2).all()
    assert V - len(undirected) + F == 2  # Euler characteristic of a sphere
    graph = scipy.sparse.coo_matrix((np.ones(len(directed)), (directed[:, 0], directed[:, 1])),
                                    shape=(V, V))
    assert connected_components(graph, directed=False)[0] == 1
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert 0.04 < volume < 0.12  # m^3, outward normals, human sized
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    assert area.min() > 1e-7
    assert len(np.unique(np.sort(f, axis=1), axis=0)) == F  # no duplicate faces


def test_body_dimensions(smpl):
    v = smpl["v_template"]
    assert v[:, 1].min() == pytest.approx(-1.165, abs=0.02)  # soles
    assert v[:, 1].max() == pytest.approx(0.535, abs=0.04)   # head top
    assert v[:, 0].max() == pytest.approx(0.86, abs=0.05)    # T-pose fingertips
    assert np.abs(v[:, 0].max() + v[:, 0].min()) < 1e-9       # left/right symmetric
    assert -0.15 < v[:, 2].min() and v[:, 2].max() < 0.25


def test_landmarks(smpl):
    v = smpl["v_template"]
    lm = {k: v[i] for k, i in mannequin.VERTEX_LANDMARKS.items()}
    head = v[v[:, 1] > 0.3]
    assert lm["nose"][2] == pytest.approx(head[:, 2].max(), abs=1e-3)
    assert abs(lm["nose"][0]) < 1e-6 and 0.35 < lm["nose"][1] < 0.47
    for side, sign in (("left", 1), ("right", -1)):
        eye, ear = lm[side + "_eye"], lm[side + "_ear"]
        assert sign * eye[0] > 0.015 and eye[1] > lm["nose"][1] and eye[2] > 0.08
        assert sign * ear[0] > 0.06 and abs(ear[1] - lm["nose"][1]) < 0.05 and abs(ear[2]) < 0.05
        big, small, heel = lm[side + "_big_toe"], lm[side + "_small_toe"], lm[side + "_heel"]
        for p in (big, small, heel):
            assert p[1] < -1.1 and sign * p[0] > 0.05
        assert big[2] > heel[2] + 0.2 and small[2] > heel[2] + 0.2
        assert sign * small[0] > sign * big[0]  # big toe on the inner side
        tips = [lm[f"{side}_{n}"] for n in ("thumb", "index", "middle", "ring", "pinky")]
        for p in tips:
            assert sign * p[0] > 0.7 and abs(p[1] - 0.21) < 0.05
        zs = [p[2] for p in tips]
        assert zs == sorted(zs, reverse=True)  # thumb front (+z) ... pinky back
        assert sign * tips[2][0] == max(sign * p[0] for p in tips)  # middle finger longest


# --------------------------------------------------------------------------- regressors, weights


def test_joint_regressor(smpl):
    jr, v = smpl["J_regressor"], smpl["v_template"]
    d = _dense(jr)
    assert (d >= 0).all()
    np.testing.assert_allclose(d.sum(1), 1.0, atol=1e-12)
    nnz = (d > 0).sum(1)
    assert (nnz >= 10).all() and (nnz <= 300).all()
    np.testing.assert_allclose(smpl["J"], jr @ v, atol=1e-12)
    assert np.abs(smpl["J"] - REFERENCE_JOINTS).max() < 0.05
    assert np.array_equal(_dense(smpl["J_regressor_prior"]), d)
    # each joint is regressed from vertices around it
    for j in range(24):
        used = v[d[j] > 0]
        assert np.linalg.norm(used - smpl["J"][j], axis=1).max() < 0.25


def test_skinning_weights(smpl):
    w = smpl["weights"]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    assert ((w > 0).sum(1) <= 4).all()
    assert np.array_equal(smpl["weights_prior"], w)
    dominant = w.argmax(1)
    lm = mannequin.VERTEX_LANDMARKS
    assert dominant[lm["nose"]] == 15
    assert dominant[lm["left_index"]] == 22 and dominant[lm["right_pinky"]] == 23
    assert dominant[lm["left_heel"]] == 7 and dominant[lm["right_big_toe"]] == 11
    # every joint drives some vertices, and the blending is smooth along edges
    assert set(np.unique(dominant)) == set(range(24))
    edges = _surface_edges(smpl)
    assert np.abs(w[edges[:, 0]] - w[edges[:, 1]]).max() < 0.5


def test_h36m_and_extra_regressors(smpl):
    v = smpl["v_template"]
    h36m = mannequin.make_h36m_regressor(smpl)
    extra = mannequin.make_extra_regressor(smpl)
    assert h36m.shape == (17, V) and extra.shape == (9, V)
    for reg in (h36m, extra):
        assert type(reg) is np.ndarray and reg.dtype == np.float64
        assert (reg >= 0).all()
        np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-12)
    pts = dict(zip(mannequin.H36M_JOINT_NAMES, h36m @ v))
    assert pts["headtop"][1] == max(p[1] for p in pts.values())
    assert pts["left_wrist"][0] > 0.6 and pts["right_wrist"][0] < -0.6
    assert pts["left_hip"][0] > 0 > pts["right_hip"][0]
    assert pts["left_ankle"][1] < pts["left_knee"][1] < pts["left_hip"][1] < pts["spine"][1]
    assert pts["spine"][1] < pts["thorax"][1] < pts["head"][1] < pts["headtop"][1]
    assert abs(pts["pelvis"][0]) < 1e-6
    ex = dict(zip(mannequin.EXTRA_JOINT_NAMES, extra @ v))
    assert ex["left_hip_extra"][0] > 0 > ex["right_hip_extra"][0]
    assert ex["headtop"][1] > ex["head_extra"][1] > ex["jaw_extra"][1] > ex["neck_extra"][1] - 0.05
    assert ex["neck_extra"][1] > ex["thorax_extra"][1] > ex["spine_extra"][1] > ex["pelvis_extra"][1]


# --------------------------------------------------------------------------- blend shapes


def test_shapedirs_meaningful_and_smooth(smpl):
    v, sd = smpl["v_template"], smpl["shapedirs"]
    top = np.argmax(v[:, 1])
    assert 0.03 <= sd[top, 1, 0] <= 0.04  # beta 0: taller, ~3.5 cm at the head top
    # beta 1: girth -- belly moves forward, sides move out
    belly = np.argmax(np.where(np.abs(v[:, 1] + 0.1) < 0.05, v[:, 2], -np.inf))
    assert sd[belly, 2, 1] > 0.005
    # beta 2: longer limbs -- the feet go down, the hands go out
    lm = mannequin.VERTEX_LANDMARKS
    assert sd[lm["left_heel"], 1, 2] < -0.01 and sd[lm["left_middle"], 0, 2] > 0.01
    mags = np.abs(sd).max(axis=(0, 1))
    assert (mags[3:] > 0).all() and mags[3] > mags[9]
    e = _surface_edges(smpl)
    jump = np.linalg.norm(sd[e[:, 0]] - sd[e[:, 1]], axis=1).max(0)  # per beta
    assert (jump < 0.5 * mags).all()  # smooth, never per-vertex noise


def test_posedirs_small_and_local(smpl):
    pd, v = smpl["posedirs"], smpl["v_template"]
    assert np.isfinite(pd).all()
    assert 1e-3 < np.abs(pd).max() < 0.02
    elbow = pd[:, :, 9 * 17:9 * 18]  # joint 18 = left elbow
    moved = np.linalg.norm(elbow, axis=1).max(1) > 1e-7
    assert moved.any() and (v[moved, 0] > 0.15).all()


def test_determinism_and_seeds():
    a = mannequin.make_smpl_arrays(seed=3)
    b = mannequin.make_smpl_arrays(seed=3)
    c = mannequin.make_smpl_arrays(seed=4)
    for key in a:
        if scipy.sparse.issparse(a[key]):
            assert (a[key] != b[key]).nnz == 0
        elif isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
            assert a[key].tobytes() == b[key].tobytes(), key
    assert not np.array_equal(a["shapedirs"], c["shapedirs"])
    assert not np.array_equal(a["posedirs"], c["posedirs"])
    assert np.array_equal(a["v_template"], c["v_template"])


def test_returns_fresh_copies():
    a = mannequin.make_smpl_arrays()
    a["v_template"][:] = 0.0
    a["shapedirs"][:] = 0.0
    a["weights"][:] = 0.0
    b = mannequin.make_smpl_arrays()
    assert b["v_template"].any() and b["shapedirs"].any() and b["weights"].any()


def test_genders_differ():
    heights, hips, shoulders = {}, {}, {}
    for g in ("neutral", "male", "female"):
        a = mannequin.make_smpl_arrays(g)
        heights[g] = np.ptp(a["v_template"][:, 1])
        hips[g] = a["J"][1, 0] - a["J"][2, 0]
        shoulders[g] = a["J"][16, 0] - a["J"][17, 0]
        assert np.array_equal(a["f"], mannequin.make_smpl_arrays()["f"])
    assert heights["male"] > heights["neutral"] > heights["female"]
    assert hips["female"] / shoulders["female"] > hips["male"] / shoulders["male"]


def test_300_betas():
    a = mannequin.make_smpl_arrays("female", num_betas=300)
    assert a["shapedirs"].shape == (V, 3, 300) and a["shapedirs"].dtype == np.float64
    ten = mannequin.make_smpl_arrays("female", num_betas=10)["shapedirs"]
    np.testing.assert_array_equal(a["shapedirs"][:, :, :10], ten)
    mags = np.abs(a["shapedirs"]).max(axis=(0, 1))
    assert mags[299] < mags[50] < mags[10] and mags[299] > 0


# --------------------------------------------------------------------------- SMPL-H, kid


def test_smplh(smplh, smpl):
    a = smplh
    assert set(a) == {"v_template", "f", "J_regressor", "J", "kintree_table", "weights", "posedirs",
                      "shapedirs", "hands_componentsl", "hands_componentsr", "hands_meanl",
                      "hands_meanr", "bs_style", "bs_type"}
    assert isinstance(a["J_regressor"], scipy.sparse.csc_matrix) and a["J_regressor"].shape == (52, V)
    assert a["J"].shape == (52, 3) and a["weights"].shape == (V, 52)
    assert a["posedirs"].shape == (V, 3, 459) and a["shapedirs"].shape == (V, 3, 10)
    assert a["kintree_table"].shape == (2, 52) and a["kintree_table"].dtype == np.int64
    assert a["kintree_table"][0, 1:].tolist() == list(mannequin.SMPLH_PARENTS[1:])
    assert np.array_equal(a["f"], smpl["f"]) and np.array_equal(a["v_template"], smpl["v_template"])
    np.testing.assert_allclose(a["J"][:22], smpl["J"][:22], atol=1e-12)
    for side, sign in (("l", 1), ("r", -1)):
        comps, mean = a["hands_components" + side], a["hands_mean" + side]
        assert comps.shape == (45, 45) and mean.shape == (45,) and comps.dtype == np.float64
        np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-10)
        fingers = a["J"][22:37] if side == "l" else a["J"][37:52]
        assert (sign * fingers[:, 0] > 0.65).all()
    w = a["weights"]
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    assert ((w > 0).sum(1) <= 4).all() and (w >= 0).all()
    lm = mannequin.VERTEX_LANDMARKS
    assert w[lm["left_index"]].argmax() == 24 and w[lm["right_thumb"]].argmax() == 51
    d = _dense(a["J_regressor"])
    assert (d >= 0).all()
    np.testing.assert_allclose(d.sum(1), 1.0, atol=1e-12)


def test_kid_template(smpl):
    kid = mannequin.make_kid_template()
    assert kid.shape == (V, 3) and kid.dtype == np.float64
    height = np.ptp(kid[:, 1])
    assert 1.0 < height < 1.2
    v = smpl["v_template"]
    lm = mannequin.VERTEX_LANDMARKS

    def head_ratio(x):  # head length (nose level to top) relative to stature
        return (x[:, 1].max() - x[lm["nose"], 1]) / np.ptp(x[:, 1])

    assert head_ratio(kid) > 1.1 * head_ratio(v)
    assert kid[lm["left_middle"], 0] > 0.3 and kid[lm["left_heel"], 1] < kid[lm["nose"], 1] - 0.8
    assert np.array_equal(kid, mannequin.make_kid_template())


# --------------------------------------------------------------------------- smplx


def test_smplx_loads_pickle_and_poses(tmp_path, smpl):
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    with open(tmp_path / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(smpl, fh, protocol=2)
    model = smplx.SMPL(model_path=str(tmp_path), gender="neutral")
    gen = torch.Generator().manual_seed(0)
    body_pose = 0.4 * torch.randn(4, 69, generator=gen)
    betas = torch.randn(4, 10, generator=gen)
    out = model(body_pose=body_pose, betas=betas, global_orient=0.3 * torch.randn(4, 3, generator=gen))
    verts = out.vertices.detach().numpy()
    assert verts.shape == (4, V, 3) and np.isfinite(verts).all()
    assert out.joints.shape == (4, 45, 3)
    extent = verts.max(1) - verts.min(1)
    assert (extent < 2.5).all() and (extent.max(1) > 0.8).all()
    # zero pose reproduces the template; extra joints are the landmark vertices
    rest = model().vertices[0].detach().numpy()
    np.testing.assert_allclose(rest, smpl["v_template"], atol=1e-5)
    np.testing.assert_allclose(model().joints[0, 24].detach().numpy(),
                               smpl["v_template"][332], atol=1e-5)
    # bending an elbow by 90 degrees keeps every edge of the arm short (no tearing)
    pose = torch.zeros(1, 69)
    pose[0, 3 * 17 + 1] = -np.pi / 2  # left elbow about y
    bent = model(body_pose=pose).vertices[0].detach().numpy()
    f = smpl["f"].astype(np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    rest_len = np.linalg.norm(rest[e[:, 0]] - rest[e[:, 1]], axis=1)
    bent_len = np.linalg.norm(bent[e[:, 0]] - bent[e[:, 1]], axis=1)
    surface = rest_len < 0.05  # ignore the hidden joining tubes
    assert (bent_len[surface] < 2.5 * rest_len[surface] + 0.01).all()
    # the forearm swings forward: the left wrist keeps x and gains z
    wrist = model(body_pose=pose).joints[0, 20].detach().numpy()
    assert wrist[2] > 0.2 and abs(wrist[0] - smpl["J"][18, 0]) < 0.03


def test_smplx_smplh_and_kid(tmp_path, smplh, smpl):
    smplx = pytest.importorskip("smplx")
    torch = pytest.importorskip("torch")
    model = smplx.SMPLH(model_path="", data_struct=smplx.utils.Struct(**smplh), use_pca=True,
                        num_pca_comps=6)
    hand = torch.zeros(1, 6)
    hand[0, 0] = 1.5
    out = model(left_hand_pose=hand, right_hand_pose=hand, body_pose=0.2 * torch.ones(1, 63))
    verts = out.vertices.detach().numpy()
    assert np.isfinite(verts).all() and np.ptp(verts[0], axis=0).max() < 2.5
    kid_path = tmp_path / "smpl_kid_template.npy"
    np.save(kid_path, mannequin.make_kid_template())
    kid = smplx.SMPL(model_path="", data_struct=smplx.utils.Struct(**smpl), age="kid",
                     kid_template_path=str(kid_path))
    betas = torch.zeros(1, 11)
    betas[0, -1] = 1.0
    kv = kid(betas=betas).vertices[0].detach().numpy()
    assert 1.0 < np.ptp(kv[:, 1]) < 1.2
