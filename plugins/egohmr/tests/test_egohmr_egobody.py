"""The EgoBody reader and the egobody-egohmr evaluation on a synthetic folder in EgoBody's layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

import meshrec
from meshrec_egohmr.checkpoint import STAGE1_FILE
from meshrec_egohmr.egobody import ADD_TRANS, EgoBodyScenes, read_annotations

IMAGES = ("egocentric_color/recording_20210907_S02_S01_01/2021-09-07-155421/PV/132754997786014666_frame_01442.jpg",
          "egocentric_color/recording_20210907_S02_S01_01/2021-09-07-155421/PV/132754997789347000_frame_01443.jpg")


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def write_egobody(root, frames=2, image_size=(240, 320)):
    """Two frames of one recording: annotations, images, transforms and stage-1 scene clouds."""
    rng = np.random.default_rng(0)
    (root / "annotation_egocentric_smpl_npz").mkdir(parents=True)
    height, width = image_size
    for name in IMAGES[:frames]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / name)
    keypoints = np.zeros((frames, 25, 3))
    keypoints[:, :15, 2] = 0.8
    np.savez(root / "annotation_egocentric_smpl_npz" / "egocapture_test_smpl.npz",
             imgname=np.array(IMAGES[:frames]), center=np.array([[160.0, 120.0]] * frames), scale=np.full(frames, 1.0),
             pose=rng.normal(scale=0.1, size=(frames, 69)), shape=rng.normal(scale=0.5, size=(frames, 10)),
             global_orient_pv=np.tile([np.pi, 0.0, 0.0], (frames, 1)), transl_pv=np.tile([0.0, 0.2, 4.0], (frames, 1)),
             fx=np.full(frames, 500.0), fy=np.full(frames, 501.0), cx=np.full(frames, 160.0), cy=np.full(frames, 120.0),
             valid_keypoints=keypoints, **{"3d_joints_pv": np.zeros((frames, 24, 3))}, gender=np.array(["m", "f"][:frames]))
    kinect2holo = np.eye(4)
    kinect2holo[:3, :3] = _rotation(0.3)
    kinect2holo[:3, 3] = [0.5, -0.2, 1.0]
    world2pv = {}
    for name in IMAGES[:frames]:
        transform = np.eye(4)
        transform[:3, :3] = _rotation(-0.1)
        transform[:3, 3] = [0.1, 0.0, 0.3]
        world2pv[name.split("/")[-1].split("_")[0]] = transform
    with open(root / "transf_matrices_all_seqs.pkl", "wb") as stream:
        pickle.dump({"recording_20210907_S02_S01_01": {"trans_kinect2holo": kinect2holo, "trans_world2pv": world2pv}}, stream)
    # stage-1 clouds: points in front of the PV camera, stored in Kinect coordinates (every 15th frame)
    pv = rng.uniform([-3.0, -1.5, 1.0], [3.0, 2.0, 8.0], size=(5000, 3))
    kinect_to_pv = ADD_TRANS @ world2pv[IMAGES[0].split("/")[-1].split("_")[0]] @ kinect2holo
    pv_to_kinect = np.linalg.inv(kinect_to_pv)
    cloud = pv @ pv_to_kinect[:3, :3].T + pv_to_kinect[:3, 3]
    folder = root / "Egohmr_scene_preprocess_s1_release"
    folder.mkdir()
    key = "/".join(IMAGES[0].split("/")[-5:])
    with open(folder / "pcd_verts_dict_test.pkl", "wb") as stream:
        pickle.dump({key: cloud}, stream)
    with open(folder / "map_dict_test.pkl", "wb") as stream:
        pickle.dump({"/".join(name.split("/")[-5:]): key for name in IMAGES[:frames]}, stream)
    return pv


def test_reader_and_scene_transform(tmp_path):
    pv = write_egobody(tmp_path)
    annotations = read_annotations(tmp_path)
    assert len(annotations) == 2 and list(annotations.gender) == [0, 1]
    assert np.allclose(annotations.boxes_xyxy()[0], [60.0, 20.0, 260.0, 220.0])
    assert np.allclose(annotations.intrinsics(0), [[500, 0, 160], [0, 500, 120], [0, 0, 1]])  # fx on both axes
    scenes = EgoBodyScenes(tmp_path)
    assert np.abs(scenes.points(IMAGES[0]) - pv).max() < 1e-9
    with pytest.raises(FileNotFoundError, match="annotation_egocentric_smpl_npz"):
        read_annotations(tmp_path / "missing")


def test_unsafe_pickles_are_refused(tmp_path):
    write_egobody(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    with open(tmp_path / "transf_matrices_all_seqs.pkl", "wb") as stream:
        pickle.dump({"x": Payload()}, stream)
    with pytest.raises(meshrec.UnsafePickleError):
        EgoBodyScenes(tmp_path)


@pytest.mark.slow
def test_evaluate_egobody_on_a_synthetic_folder(tmp_path, egohmr_release, body_models_dir):
    write_egobody(tmp_path)
    method = meshrec.load_method("prohmr-scene", checkpoint=egohmr_release / STAGE1_FILE, body_model=body_models_dir,
                                 device="cpu", num_samples=2, seed=0, stage1_scene_points=2000)
    result = meshrec.evaluate(method, "egobody-egohmr", tmp_path, body_model=body_models_dir, batch_size=2,
                              progress=False)
    report = result["metrics"]
    assert report["frames"] == 2 and report["num_samples"] == 2
    for key in ("G-MPJPE", "MPJPE", "PA-MPJPE", "MPJPE-vis", "V2V", "apd-joints", "collision-ratio", "contact-ratio"):
        assert np.isfinite(report[key]), key
    assert 0 <= report["collision-ratio"] <= 1 and report["MPJPE"] > 0
