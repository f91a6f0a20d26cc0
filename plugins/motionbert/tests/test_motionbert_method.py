"""The motionbert method through meshrec.predict: outputs, windows, flip, translation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshrec
from meshrec_motionbert.keypoints import average_rotations, flip_keypoints, flip_rotations, normalize
from motionbert_small import small_method

K = np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]])


def _keypoints(frames=6, people=2, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.empty((frames, people, 17, 3))
    kp[..., 0] = rng.uniform(200, 440, (frames, people, 17))
    kp[..., 1] = rng.uniform(100, 400, (frames, people, 17))
    kp[..., 2] = rng.uniform(0.3, 1.0, (frames, people, 17))
    return kp


def test_prediction_holds_every_frame_and_person(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=24)
    kp = _keypoints()
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp)
    assert pred.vertices.shape == (12, 6890, 3) and pred.body_pose.shape == (12, 23, 3, 3)
    assert pred.extras["frames"] == 6 and pred.extras["people"] == 2
    assert pred.extras["joints_h36m"].shape == (12, 17, 3)
    assert not pred.extras["translation_estimated"]
    assert torch.equal(pred.transl, torch.zeros(12, 3, dtype=torch.float64))
    # frame-major: body t * P + p is person p at frame t; person 1 alone gives the same bodies
    alone = meshrec.predict(None, method=method, keypoint_sequence=kp[:, 1:])
    assert (alone.vertices - pred.vertices[1::2]).abs().max() < 1e-9
    assert (pred.betas[1::2] - pred.betas[1]).abs().max() < 1e-12  # one clip: one set of betas per person
    assert torch.allclose(pred.scores, torch.as_tensor(kp[..., 2].reshape(12, 17).mean(1)))


def test_network_sees_the_normalised_clip(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=24, normalization="image", image_size=(640, 480))
    kp = _keypoints(frames=5, people=1)
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp)
    x = torch.as_tensor(normalize(kp[:, 0], "image", (640, 480)))[None]
    with torch.no_grad():
        direct = method.model.regress(x)
    assert (pred.global_orient - direct["rotmat"][0, :, 0]).abs().max() < 1e-12
    assert (pred.body_pose - direct["rotmat"][0, :, 1:]).abs().max() < 1e-12


def test_long_sequences_run_in_windows(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=8, window_overlap=2)
    kp = _keypoints(frames=20, people=1, seed=1)
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp)
    x = torch.as_tensor(normalize(kp[:, 0], "bbox"))  # the box spans the whole sequence
    with torch.no_grad():
        windows = [method.model.regress(x[s:s + 8][None])["rotmat"][0] for s in (0, 6, 12)]
    expected = torch.cat([windows[0][:7], windows[1][1:7], windows[2][1:]])  # overlaps split in the middle
    assert (pred.global_orient - expected[:, 0]).abs().max() < 1e-12
    assert pred.betas[0].ne(pred.betas[-1]).any()  # each window has its own betas


def test_default_overlap_follows_clip_len(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=9)  # overlap min(27, 9 // 3) = 3: windows 0, 6, 11
    kp = _keypoints(frames=20, people=1, seed=3)
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp)
    x = torch.as_tensor(normalize(kp[:, 0], "bbox"))
    with torch.no_grad():
        last = method.model.regress(x[11:20][None])["rotmat"][0]
    # frame 19 lies only in the last window; frame 14 has margin 3 in window 11..19, 0 in window 6..14
    assert (pred.global_orient[[14, 19]] - last[[3, 8], 0]).abs().max() < 1e-12


def test_flip_averages_rotations(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=24, flip=True)
    kp = _keypoints(frames=4, people=1, seed=2)
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp)
    x = torch.as_tensor(normalize(kp[:, 0], "bbox"))[None]
    with torch.no_grad():
        plain, mirrored = method.model.regress(x), method.model.regress(flip_keypoints(x))
    expected = average_rotations(plain["rotmat"], flip_rotations(mirrored["rotmat"]))[0]
    assert (pred.global_orient - expected[:, 0]).abs().max() < 1e-10
    assert (pred.betas - (plain["betas"] + mirrored["betas"])[0] / 2).abs().max() < 1e-12
    rotations = torch.cat([pred.global_orient[:, None], pred.body_pose], 1)
    eye = torch.eye(3, dtype=torch.float64)
    assert (rotations @ rotations.transpose(-1, -2) - eye).abs().max() < 1e-10
    assert (torch.linalg.det(rotations) - 1).abs().max() < 1e-10


def test_camera_gives_a_fitted_translation(motionbert_body_models):
    from meshrec_motionbert.method import estimate_translation

    method = small_method(motionbert_body_models, clip_len=24)
    kp = _keypoints(frames=3, people=1)
    pred = meshrec.predict(None, method=method, keypoint_sequence=kp, camera=K)
    plain = meshrec.predict(None, method=method, keypoint_sequence=kp)
    assert pred.extras["translation_estimated"]
    expected = estimate_translation(plain.extras["joints_h36m"], torch.as_tensor(kp[:, 0]),
                                    torch.as_tensor(K).expand(3, 3, 3))
    assert (pred.transl - expected).abs().max() < 1e-9
    assert (pred.vertices - plain.vertices - expected[:, None]).abs().max() < 1e-9
    assert (pred.joints - plain.joints - expected[:, None]).abs().max() < 1e-9


def test_coco_layout(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=24, keypoint_layout="coco17")
    pred = meshrec.predict(None, method=method, keypoint_sequence=_keypoints(frames=3, people=1))
    assert pred.vertices.shape == (3, 6890, 3)


@pytest.mark.parametrize("change, error, match", [
    (lambda kp: kp[:, :, :16], ValueError, "16 joints"),
    (lambda kp: np.where(np.arange(17)[None, None, :, None] == 3, np.nan, kp), ValueError, "NaN"),
    (lambda kp: kp[:0], ValueError, "0 frames"),
])
def test_bad_sequences(motionbert_body_models, change, error, match):
    method = small_method(motionbert_body_models, clip_len=24)
    with pytest.raises(error, match=match):
        meshrec.predict(None, method=method, keypoint_sequence=change(_keypoints()))


def test_image_normalisation_needs_a_size(motionbert_body_models):
    method = small_method(motionbert_body_models, clip_len=24, normalization="image")
    with pytest.raises(meshrec.MissingInputError, match="image_size"):
        meshrec.predict(None, method=method, keypoint_sequence=_keypoints())


def test_options_are_checked(motionbert_body_models):
    with pytest.raises(ValueError, match="clip_len"):
        small_method(motionbert_body_models, clip_len=300)
    with pytest.raises(ValueError, match="image_size"):
        small_method(motionbert_body_models, image_size=(640, -1))
    with pytest.raises(ValueError, match="normalization"):
        small_method(motionbert_body_models, normalization="crop")


@pytest.mark.slow
def test_load_method_and_predict_with_released_layout(plugin_manager, motionbert_checkpoint, motionbert_body_models):
    from meshrec_motionbert import plugin

    plugin_manager.register(plugin, name="motionbert")
    method = meshrec.load_method("motionbert", checkpoint=motionbert_checkpoint, body_model=motionbert_body_models,
                                 device="cpu", clip_len=16)
    pred = meshrec.predict(None, method=method, keypoint_sequence=_keypoints(frames=20, people=1), camera=K)
    assert pred.vertices.shape == (20, 6890, 3) and pred.method == "motionbert"
    assert torch.isfinite(pred.vertices).all()


def test_missing_regressor_is_named(plugin_manager, motionbert_body_models, tmp_path, monkeypatch):
    import shutil

    from meshrec_motionbert import plugin

    plugin_manager.register(plugin, name="motionbert")
    monkeypatch.delenv("MESHREC_BODY_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "only_smpl"
    folder.mkdir()
    shutil.copy(motionbert_body_models / "SMPL_NEUTRAL.pkl", folder)
    checkpoint = tmp_path / "best_epoch.bin"
    torch.save({"model": {}}, checkpoint)  # never loaded: the regressor is looked up first
    with pytest.raises(meshrec.BodyModelNotFoundError, match="J_regressor_h36m_correct.npy"):
        meshrec.load_method("motionbert", checkpoint=checkpoint, body_model=folder, device="cpu")
