"""Defects a new user met in their first hour, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import meshrec
from meshrec.body import SMPL, JointRegressor

REPOSITORY = Path(__file__).resolve().parents[1]


def test_joint_regressor_from_an_existing_file_path(body_models_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "my_regressor.npy"
    moved.parent.mkdir()
    moved.write_bytes((body_models_dir / "J_regressor_h36m.npy").read_bytes())
    regressor = JointRegressor.from_file(moved)
    assert regressor.num_joints == 17
    np.testing.assert_allclose(regressor.to_dense().double().numpy(), np.load(moved), rtol=1e-6, atol=1e-7)
    with pytest.raises(meshrec.BodyModelNotFoundError):
        JointRegressor.from_file(tmp_path / "elsewhere" / "missing.npy")


def test_a_file_of_another_gender_is_not_taken_silently(body_models_dir):
    with pytest.warns(UserWarning, match="SMPL_MALE.pkl is the male model, but gender='neutral'"):
        model = SMPL(body_models_dir / "SMPL_MALE.pkl", gender="neutral")
    assert model.gender == "male"
    male = SMPL(body_models_dir, gender="male")
    torch.testing.assert_close(model.v_template, male.v_template)


def test_gitignore_covers_the_quick_start_outputs():
    ignored = (REPOSITORY / ".gitignore").read_text().split()
    assert "/.venv/" in ignored and "/meshrec-demo/" in ignored


def test_body_models_help_names_the_whole_search_order(capsys):
    from meshrec.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$MESHREC_BODY_MODELS" in text and "~/.cache/meshrec/body_models" in text


def test_prediction_save_and_back_into_smpl(plugin_manager, body_models_dir, tmp_path):
    """The README's API section: save meshes from Python, and feed rotation matrices back."""
    from meshrec.io.meshes import read_ply_points
    from meshrec_example import plugin

    plugin_manager.register(plugin, name="example")
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    pred = meshrec.predict(image, method="example", body_model=body_models_dir, bbox=[[10, 10, 80, 200], [150, 20, 60, 180]])
    for name in ("people.ply", "people.obj", "people.npz"):
        assert pred.save(tmp_path / name).is_file()
    np.testing.assert_allclose(read_ply_points(tmp_path / "people.ply"), pred.vertices.reshape(-1, 3).numpy(), atol=1e-6)
    obj_faces = [line for line in (tmp_path / "people.obj").read_text().splitlines() if line.startswith("f ")]
    assert len(obj_faces) == 2 * 13776
    with np.load(tmp_path / "people.npz") as saved:
        np.testing.assert_array_equal(saved["betas"], pred.betas.numpy())
    with pytest.raises(ValueError, match="use a .npz, .ply or .obj"):
        pred.save(tmp_path / "people.txt")
    smpl = SMPL(body_models_dir)
    again = smpl(global_orient=pred.global_orient[:, None], body_pose=pred.body_pose, betas=pred.betas,
                 transl=pred.transl, pose2rot=False)
    torch.testing.assert_close(again.vertices, pred.vertices, atol=1e-5, rtol=0)


def test_folders_and_symlink_loops_are_named_as_such(tmp_path):
    from meshrec.io.images import check_image_file

    (tmp_path / "folder.jpg").mkdir()
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "gone.jpg")
    for path, said in ((tmp_path / "folder.jpg", "is a folder"), (loop, "loops back on itself"),
                       (dangling, "gone.jpg, which does not exist"), (tmp_path / "none.jpg", "does not exist")):
        with pytest.raises(meshrec.ImageReadError, match=said):
            check_image_file(path)


def test_decompression_bombs_are_one_clean_error(tmp_path, monkeypatch):
    from PIL import Image

    from meshrec.io.images import check_image_file, read_image

    Image.new("RGB", (400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # any image over 2x this is a "bomb" to Pillow
    for read in (check_image_file, read_image):
        with pytest.raises(meshrec.ImageReadError, match="too large to decode safely"):
            read(tmp_path / "big.png")


def test_16_bit_png_keeps_its_contrast(tmp_path):
    from PIL import Image

    from meshrec.io.images import read_image

    ramp = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 32)  # 0 .. 65504
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.round(ramp / 65535 * 255).astype(np.uint8))


@pytest.mark.parametrize("typed, meant", [("3dpw", "pw3d"), ("hrm", "hmr"), ("motionbret", "motionbert"),
                                          ("sahm", "sahmr"), ("nonsense", None), ("optoin", None),
                                          ("scale", "bbox_scale")])
def test_close_names_are_suggested_and_far_ones_are_not(typed, meant):
    from meshrec.errors import closest

    names = ["hmr", "fit", "sahmr", "mahmr", "egohmr", "prohmr-scene", "motionbert", "pw3d", "pw3d-motionbert",
             "bbox_scale", "trust_checkpoint"]
    assert closest(typed, names) == meant


def test_scene_as_a_mesh_file_and_in_millimetres(tmp_path):
    from meshrec.api import _scene

    (tmp_path / "room.obj").write_text("v 0 0 3\nv 1 0 3\nv 0 1 3\nf 1 2 3\n")
    points = _scene(tmp_path / "room.obj", "input[0]")
    assert points.shape[1] == 3 and len(points) >= 3 and np.allclose(points[:, 2], 3)
    with pytest.raises(ValueError, match="scene for input\\[0\\].*millimetres.*divide the points by 1000"):
        _scene(points * 1000, "input[0]")


def test_an_evaluator_counts_invalid_samples_and_never_scores_them_well():
    from meshrec import metrics

    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 17, 3, generator=generator), torch.randn(4, 17, 3, generator=generator)
    clean = metrics.evaluator("standard", joint_regressor=np.eye(17))
    clean.update(pred_joints=pred, target_joints=target)
    report = clean.compute()
    assert report["num_invalid_samples"] == 0 and np.isfinite(report["MPJPE"])
    broken = pred.clone()
    broken[2, 5] = float("nan")
    evaluator = metrics.evaluator("standard", joint_regressor=np.eye(17))
    with pytest.raises(ValueError, match=r"pred_joints contains NaN \(samples \[2\]"):
        evaluator.update(pred_joints=broken, target_joints=target)
    broken[2, 5] = float("inf")  # a body that blew up: counted, and no average it enters is finite
    evaluator.update(pred_joints=broken, target_joints=target)
    report = evaluator.compute()
    assert report["num_invalid_samples"] == 1 and report["num_samples"] == 4
    assert not np.isfinite(report["MPJPE"]) and not np.isfinite(report["PA-MPJPE"])
