"""meshrec.predict with the sahmr method: output layout, determinism, template, bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import meshrec
from meshrec.errors import MissingInputError
from meshrec_sahmr import plugin
from meshrec_sahmr.support import SupportFileError, build_template, load_downsampling
from sahmr_synthetic import scene_points

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
BOX = np.array([[250.0, 100.0, 150.0, 300.0]])  # x, y, w, h (meshrec.predict's default format)


def image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def support(sahmr_files, body_models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("support")
    for item in sahmr_files[1].iterdir():
        shutil.copy(item, folder)
    shutil.copy(next(body_models_dir.rglob("J_regressor_h36m.npy")), folder)
    return folder


@pytest.fixture
def sahmr(plugin_manager, sahmr_files, support, body_models_dir):
    plugin_manager.register(plugin, name="sahmr")
    return meshrec.load_method("sahmr", checkpoint=sahmr_files[0], body_model=body_models_dir, device="cpu",
                               support_dir=str(support))


def test_predict_returns_a_camera_frame_mesh(sahmr):
    prediction = meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=scene_points())
    assert prediction.method == "sahmr" and prediction.num_people == 1
    assert prediction.vertices.shape == (1, 6890, 3) and prediction.joints.shape == (1, 17, 3)
    assert torch.isfinite(prediction.vertices).all()
    # the mesh is module 2's root-relative output placed at the refined root, in front of the camera
    torch.testing.assert_close(prediction.transl, prediction.extras["root_refined"])
    assert float(prediction.transl[0, 2]) > 0.5
    joints = torch.einsum("jv,pvc->pjc", sahmr.regressor, prediction.vertices)
    torch.testing.assert_close(prediction.joints, joints)
    assert torch.isnan(prediction.betas).all() and torch.isnan(prediction.global_orient).all()
    assert prediction.extras["contact_points"].shape == (1, 500, 3)
    assert prediction.joint_names[0] == "pelvis" and len(prediction.joint_names) == 17


@pytest.mark.slow
def test_predict_is_deterministic_by_default_and_seedable(sahmr):
    first = meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=scene_points())
    again = meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=scene_points())
    assert torch.equal(first.vertices, again.vertices)
    assert int(first.extras["num_contact_points"][0]) > 500  # the resampling ran
    sahmr.options["contact_seed"] = 7
    other = meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=scene_points())
    assert not torch.equal(first.extras["contact_points"], other.extras["contact_points"])


@pytest.mark.slow
def test_two_people_and_two_images_in_one_batch(sahmr):
    boxes = np.array([[250.0, 100.0, 150.0, 300.0], [60.0, 120.0, 120.0, 260.0]])
    single = [meshrec.predict(image(), method=sahmr, bbox=box[None], camera=K, scene=scene_points())
              for box in boxes]
    both = meshrec.predict([image(), image(1)], method=sahmr, bbox=[boxes, boxes[:1]], camera=K,
                           scene=scene_points(), batch_size=2)
    assert [p.num_people for p in both] == [2, 1]
    for index in range(2):
        torch.testing.assert_close(both[0].vertices[index], single[index].vertices[0], rtol=1e-4, atol=1e-4)


def test_template_is_the_upside_down_zero_pose_smpl_downsampled(sahmr, support):
    body = sahmr.body_model
    regressor = sahmr.regressor.double()
    downsampling = load_downsampling(support / "mesh_downsampling.npz")
    joints14, verts431 = build_template(body, regressor, downsampling)
    # by hand: rotate the zero-pose template by 3.1416 rad about x, regress, subtract the pelvis, select
    out = body(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), body_pose=torch.zeros(1, 69))
    angle = 3.1416
    rotation = torch.tensor([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]],
                            dtype=torch.float64)
    root = out.joints[0, 0].double()
    vertices = (out.vertices[0].double() - root) @ rotation.T + root
    joints = regressor @ vertices
    vertices = vertices - joints[0]
    rows0 = downsampling[0].coalesce().indices()
    rows1 = downsampling[1].coalesce().indices()
    selected = vertices[rows0[1][torch.argsort(rows0[0])]][rows1[1][torch.argsort(rows1[0])]]
    torch.testing.assert_close(verts431, selected, rtol=0, atol=1e-5)
    torch.testing.assert_close(joints14, (joints - joints[0])[[3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]],
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(sahmr.model.metro_enhanced.init_verts431, verts431.float())


def test_missing_inputs_are_named(sahmr):
    with pytest.raises(MissingInputError, match="scene"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K)
    with pytest.raises(MissingInputError, match="camera"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, scene=scene_points())


def test_scene_in_millimetres_is_detected(sahmr):
    with pytest.raises(ValueError, match="millimetres.*divide the points by 1000"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=scene_points() * 1000)


def test_wrong_camera_shape(sahmr):
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, camera=np.eye(4), scene=scene_points())


def test_empty_crop_around_the_root(sahmr):
    # a scene far to the side of the person: inside the box frustum only far away, none near the root
    far = scene_points()
    far = far[far[:, 2] > 4.9]  # the back wall only (5 m); the estimated root is ~2.5 m away
    with pytest.raises(ValueError, match="empty_crop='frustum'"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=far)
    sahmr.options["empty_crop"] = "frustum"  # upstream's fallback: the whole frustum
    prediction = meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=far)
    assert prediction.vertices.shape == (1, 6890, 3)


def test_no_scene_point_in_the_box_frustum(sahmr):
    behind = scene_points()
    behind[:, 2] *= -1
    with pytest.raises(ValueError, match="frustum"):
        meshrec.predict(image(), method=sahmr, bbox=BOX, camera=K, scene=behind)


def test_missing_support_file_says_where_to_get_it(plugin_manager, sahmr_files, body_models_dir, tmp_path):
    plugin_manager.register(plugin, name="sahmr")
    lonely = tmp_path / "ckpt.pth"
    shutil.copy(sahmr_files[0], lonely)
    with pytest.raises(SupportFileError, match="mesh_downsampling.npz.*support_dir"):
        meshrec.load_method("sahmr", checkpoint=lonely, body_model=body_models_dir, device="cpu",
                            support_dir=str(tmp_path / "nowhere"))


def test_plugin_registers_the_method_and_datasets(plugin_manager):
    plugin_manager.register(plugin, name="sahmr")
    assert "sahmr" in meshrec.list_methods()
    assert {"rich-sahmr", "prox-sahmr"} <= set(meshrec.list_datasets())
