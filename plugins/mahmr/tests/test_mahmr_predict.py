"""meshrec.predict with mahmr / sathmr: every person, metres, camera frame, intrinsics; bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import meshrec
from mahmr_checkpoints import SMALL, synthetic_state
from meshrec.body import SMPL
from meshrec_mahmr import plugin
from meshrec_mahmr.preprocess import read_sixteen_bit

S = 1.000001  # 2 sigmoid(0) + 1e-6


def controlled_state(**layout):
    """Small checkpoint whose heads give known values: every query confident (sigmoid(5)), the
    camera (0.1, -0.2, 0) and a 2 atan(0.5) field of view (so f = image height)."""
    state = synthetic_state(SMALL, seed=5, **layout)
    state["conf_head.weight"] = torch.zeros(1, 64)
    state["conf_head.bias"] = torch.tensor([5.0])
    state["cam_head.layers.2.weight"] = torch.zeros(3, 32)
    state["cam_head.layers.2.bias"] = torch.tensor([0.1, -0.2, 0.0])
    if "fov_head.layers.3.weight" in state:
        state["fov_head.layers.3.weight"] = torch.zeros(1, 64)
        state["fov_head.layers.3.bias"] = torch.tensor([2 * math.atan(0.5)])
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mahmr_stage3-controlled.bin"
    torch.save(controlled_state(), path)
    return path


@pytest.fixture
def mahmr(plugin_manager, checkpoint, body_models_dir):
    plugin_manager.register(plugin, name="mahmr")
    return meshrec.load_method("mahmr", checkpoint=checkpoint, body_model=body_models_dir, device="cpu")


def photo(height=300, width=400, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    base = 127 + 60 * np.sin(xx / 17.0)[..., None] * np.cos(yy / 23.0)[..., None] * np.array([1.0, 0.7, -0.5])
    return np.clip(base + g.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def test_every_person_in_metres_with_intrinsics(mahmr, body_models_dir):
    prediction = meshrec.predict(photo(), method=mahmr)
    P = prediction.num_people
    assert P == 7, "all 7 queries of the checkpoint are confident"
    assert prediction.vertices.shape == (P, 6890, 3) and prediction.joints.shape == (P, 45, 3)
    assert prediction.betas.shape == (P, 11) and prediction.body_pose.shape == (P, 23, 3, 3)
    torch.testing.assert_close(prediction.scores, torch.full((P,), 1 / (1 + math.exp(-5))))
    # 300 x 400 -> 168 x 224 (rate 0.56); f = resized height = 168 px, i.e. 300 original px
    K = prediction.extras["intrinsics"].double()
    torch.testing.assert_close(K, torch.tensor([[300.0, 0, 200], [0, 300, 150], [0, 0, 1]], dtype=torch.float64),
                               rtol=1e-6, atol=1e-4)
    assert prediction.extras["fov"] == pytest.approx(2 * math.atan(0.5), abs=1e-6)
    # t = (c_x / s, c_y / s, 2 f / (s * 224)) in metres, f = 168 resized px
    expected_t = torch.tensor([0.1 / S, -0.2 / S, 2 * 168 / (S * 224)])
    torch.testing.assert_close(prediction.transl, expected_t.expand(P, 3), rtol=1e-6, atol=1e-6)
    # the meshes are the kid-blended SMPL of the betas, moved by t: the core's SMPL with
    # age="kid" (11 betas) gives the same vertices as the plugin's wrapper
    kid = SMPL(body_models_dir, age="kid", kid_template_path=body_models_dir / "smpl_kid_template.npy",
               create_transl=False)
    rebuilt = kid(betas=prediction.betas, global_orient=prediction.global_orient[:, None],
                  body_pose=prediction.body_pose, transl=prediction.transl, pose2rot=False)
    torch.testing.assert_close(rebuilt.vertices, prediction.vertices, rtol=1e-5, atol=1e-5)
    assert prediction.betas[:, 10].abs().max() > 0.01, "the kid coefficient must matter in this test"
    # 2D keypoints are the joints projected with K, in original pixels
    homo = prediction.joints.double() @ K.T
    torch.testing.assert_close(prediction.extras["keypoints_2d"].double(), homo[..., :2] / (homo[..., 2:] + 1e-6),
                               rtol=1e-5, atol=1e-3)
    boxes = prediction.extras["boxes"]
    assert boxes.shape == (P, 4) and bool((boxes[:, 2:] >= boxes[:, :2]).all())


def test_given_camera_overrides_the_focal(mahmr):
    image = photo()
    predicted = meshrec.predict(image, method=mahmr)
    K_user = np.array([[600.0, 0, 190], [0, 600, 160], [0, 0, 1]])
    given = meshrec.predict(image, method=mahmr, camera=K_user)
    torch.testing.assert_close(given.extras["intrinsics"].double(), torch.from_numpy(K_user), rtol=1e-6, atol=1e-4)
    assert given.extras["focal_source"] == "given"
    # depth scales with the focal length (600 vs the predicted 300 original px) ...
    torch.testing.assert_close(given.transl[:, 2], predicted.transl[:, 2] * 2, rtol=1e-6, atol=1e-6)
    # ... and every body origin keeps its predicted pixel
    def pixel(t, K):
        p = t.double() @ K.double().T
        return p[:, :2] / p[:, 2:]
    torch.testing.assert_close(pixel(given.transl, given.extras["intrinsics"]),
                               pixel(predicted.transl, predicted.extras["intrinsics"]), rtol=1e-6, atol=1e-3)
    # pose and shape do not depend on the camera
    torch.testing.assert_close(given.betas, predicted.betas)


def test_threshold_option_and_batch(plugin_manager, checkpoint, body_models_dir):
    plugin_manager.register(plugin, name="mahmr")
    strict = meshrec.load_method("mahmr", checkpoint=checkpoint, body_model=body_models_dir, device="cpu",
                                 conf_thresh=0.999)
    predictions = meshrec.predict([photo(seed=1), photo(200, 120, seed=2)], method=strict)
    assert [p.num_people for p in predictions] == [0, 0]
    assert predictions[0].vertices.shape == (0, 6890, 3)
    with pytest.raises(ValueError, match="conf_thresh"):
        meshrec.load_method("mahmr", checkpoint=checkpoint, body_model=body_models_dir, device="cpu", conf_thresh=1.5)


@pytest.mark.slow
def test_bad_inputs(mahmr, tmp_path):
    with pytest.raises(ValueError, match="at least 32 px"):
        meshrec.predict(photo(20, 300), method=mahmr)
    grey = photo()[..., 0]
    assert meshrec.predict(grey, method=mahmr).num_people == 7
    # a 16-bit greyscale PNG is read by its bit depth, not clipped to white
    from PIL import Image

    deep = (grey.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_sixteen_bit(tmp_path / "deep.png")[..., 0], grey)
    from_file = meshrec.predict(tmp_path / "deep.png", method=mahmr)
    from_array = meshrec.predict(np.repeat(grey[..., None], 3, axis=2), method=mahmr)
    torch.testing.assert_close(from_file.vertices, from_array.vertices)
    with pytest.warns(UserWarning, match="downscaled"):
        huge = meshrec.predict(photo(5400, 300, seed=3), method=mahmr)
    assert huge.num_people == 7
    with pytest.raises(ValueError, match="camera"):
        meshrec.predict(photo(), method=mahmr, camera=np.eye(3) * -1)


def test_sathmr_fixed_fov(plugin_manager, tmp_path, body_models_dir):
    path = tmp_path / "sat_644-controlled.pth"
    torch.save(controlled_state(kid=False, fov=False, dn=True), path)
    plugin_manager.register(plugin, name="mahmr")
    sat = meshrec.load_method("sathmr", checkpoint=path, body_model=body_models_dir, device="cpu")
    prediction = meshrec.predict(photo(), method=sat)
    assert prediction.num_people == 7 and prediction.betas.shape == (7, 10)
    f = 224 / (2 * math.tan(math.pi / 6))  # fixed 60 degree FoV on the 224 square (1288 when released)
    assert prediction.extras["intrinsics"][0, 0].item() == pytest.approx(f / 0.56, rel=1e-5)
    assert prediction.transl[0, 2].item() == pytest.approx(2 * f / (S * 224), rel=1e-5)
    assert "fov" not in prediction.extras


def write_synthetic_relative_human(root, names=("1234567.jpg", "och_000002.jpg")):
    """A Relative Human folder (``test_annots.npz``, ``images/``) with two people per image."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    g = np.random.default_rng(0)
    annots = {}
    for index, name in enumerate(names):
        Image.fromarray(photo(300, 400, seed=index)).save(root / "images" / name)
        people = []
        for p in range(2):
            kp = np.concatenate([g.uniform(50 + 150 * p, 150 + 150 * p, (14, 1)), g.uniform(50, 250, (14, 1)),
                                 np.full((14, 1), 2.0)], axis=1)
            people.append({"bbox": [0, 0, 1, 1], "kp2d": kp, "depth_id": p, "age": p})
        annots[name] = people
    np.savez(root / "test_annots.npz", annots=np.array(annots, dtype=object))
    return root


@pytest.mark.slow
def test_relative_human_evaluation_end_to_end(mahmr, tmp_path, body_models_dir):
    """meshrec.evaluate on a synthetic Relative Human folder: 7 detections per image."""
    root = write_synthetic_relative_human(tmp_path / "RelativeHuman")
    result = meshrec.evaluate(mahmr, "relative-human", root, body_model=body_models_dir, progress=False)
    metrics = result["metrics"]
    assert metrics["num_images"] == 2
    assert metrics["true_positives"] + metrics["false_positives"] == 14
    assert metrics["true_positives"] + metrics["misses"] == 4
    for key in ("precision", "recall", "f1", "mPCKh", "PCRD_0.2"):
        assert 0.0 <= metrics[key] <= 1.0


def test_missing_kid_template_says_what_to_do(plugin_manager, checkpoint, body_models_dir, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("SMPL_NEUTRAL.pkl",):
        (folder / name).write_bytes((body_models_dir / name).read_bytes())
    plugin_manager.register(plugin, name="mahmr")
    with pytest.raises(FileNotFoundError, match="smpl_kid_template.npy.*kid_template=PATH"):
        meshrec.load_method("mahmr", checkpoint=checkpoint, body_model=folder, device="cpu",
                            kid_template=str(tmp_path / "nowhere" / "smpl_kid_template.npy"))
