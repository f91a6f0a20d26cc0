"""The EgoBody reader and the egobody-egohmr evaluation on a synthetic folder in EgoBody's layout."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

import meshrec
from meshrec_egohmr.checkpoint import STAGE1_FILE
from meshrec_egohmr.checkpoint import STAGE2_FILE
from meshrec_egohmr.egobody import ADD_TRANS, CUBE_FOLDERS, EgoBodyCubes, EgoBodyScenes, cube_file, kinect_to_pv, read_annotations

RECORDING = "recording_20210907_S02_S01_01"
IMAGES = tuple(f"egocentric_color/{RECORDING}/2021-09-07-155421/PV/1327549977{86014666 + 3333334 * k}_frame_0{1442 + k}.jpg"
               for k in range(5))


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def write_egobody(root, frames=2, image_size=(240, 320)):
    """``frames`` (at most 5) frames of one recording: annotations, images, transforms and stage-1
    scene clouds."""
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
             valid_keypoints=keypoints, **{"3d_joints_pv": np.zeros((frames, 24, 3))},
             gender=np.array(["m", "f", "m", "f", "f"][:frames]))
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


def write_cubes(root, frames=2, points=3000):
    """EgoHMR's offline stage-2 cubes in the release layout (scene-mesh frame, float64 .npy),
    EgoBody's data_info_release.csv and the recording's kinect12_to_world calibration, after
    :func:`write_egobody`. Returns {source: [each frame's cube in its PV camera frame]}."""
    rng = np.random.default_rng(3)
    kinect12_to_world = np.eye(4)
    kinect12_to_world[:3, :3] = _rotation(0.7)
    kinect12_to_world[:3, 3] = [1.0, 0.3, -2.0]
    (root / "data_info_release.csv").write_text(f"recording_name,scene_name,body_idx_fpv\n{RECORDING},seminar_g110,0 male\n")
    calibration = root / "calibrations" / RECORDING / "cal_trans" / "kinect12_to_world"
    calibration.mkdir(parents=True)
    (calibration / "seminar_g110.json").write_text(json.dumps({"trans": kinect12_to_world.tolist()}))
    with open(root / "transf_matrices_all_seqs.pkl", "rb") as stream:
        transforms = pickle.load(stream)
    expected = {}
    for offset, source in enumerate(("from_pred", "from_gt")):
        expected[source] = []
        for name in IMAGES[:frames]:
            # points around the annotated body (transl_pv = 0, 0.2, 4), in the PV frame
            pv = rng.uniform([-1.0, -0.8, 3.0], [1.0, 1.2, 5.0], size=(points, 3)) + 0.05 * offset
            scene_to_pv = kinect_to_pv(transforms, name) @ np.linalg.inv(kinect12_to_world)
            pv_to_scene = np.linalg.inv(scene_to_pv)
            path = root / CUBE_FOLDERS[source] / "test" / RECORDING / name.split("/")[2] / name.split("/")[-1].replace(".jpg", ".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, pv @ pv_to_scene[:3, :3].T + pv_to_scene[:3, 3])
            expected[source].append(pv)
    return expected


def test_offline_cube_reader(tmp_path):
    write_egobody(tmp_path, frames=3)
    expected = write_cubes(tmp_path, frames=3)
    assert cube_file(tmp_path, IMAGES[1]) == (tmp_path / "Egohmr_scene_preprocess_cube_s2_from_pred_release" / "test" / RECORDING
                                              / "2021-09-07-155421" / IMAGES[1].split("/")[-1].replace(".jpg", ".npy"))
    for source in ("from_pred", "from_gt"):
        cubes = EgoBodyCubes(tmp_path, "test", source)
        for k in range(3):
            assert np.abs(cubes.points(IMAGES[k]) - expected[source][k]).max() < 1e-9
    cubes = EgoBodyCubes(tmp_path, "test", "from_pred")
    cube_file(tmp_path, IMAGES[2]).unlink()
    with pytest.raises(FileNotFoundError, match=r"frame_01444\.npy does not exist.*Egohmr_scene_preprocess_cube_s2_from_pred_release"):
        cubes.points(IMAGES[2])
    np.save(cube_file(tmp_path, IMAGES[2]), np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        cubes.points(IMAGES[2])
    np.save(cube_file(tmp_path, IMAGES[2]), np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        cubes.points(IMAGES[2])
    np.save(cube_file(tmp_path, IMAGES[2]), np.array([{"points": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a plain .npy"):
        cubes.points(IMAGES[2])
    with pytest.raises(FileNotFoundError, match="Egohmr_scene_preprocess_cube_s2_from_gt_release.*does not exist"):
        EgoBodyCubes(tmp_path, "val", "from_gt")
    (tmp_path / "data_info_release.csv").unlink()
    with pytest.raises(FileNotFoundError, match="data_info_release.csv"):
        EgoBodyCubes(tmp_path, "test", "from_pred")


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


@pytest.mark.slow
def test_evaluate_with_offline_cubes_independent_of_batching(tmp_path, egohmr_release, body_models_dir, monkeypatch):
    write_egobody(tmp_path, frames=3)
    expected = write_cubes(tmp_path, frames=3)
    method = meshrec.load_method("egohmr", checkpoint=egohmr_release / STAGE2_FILE, body_model=body_models_dir,
                                 device="cpu", timestep_respacing="ddim5", num_samples=2, seed=0, guidance=False,
                                 stage1_scene_points=2000)
    given = []
    predict_batch = method.predict_batch

    def spy(samples, **kwargs):
        given.extend(kwargs["cubes"])
        assert kwargs["seeds"] == [0] * len(samples)
        return predict_batch(samples, **kwargs)

    monkeypatch.setattr(method, "predict_batch", spy)
    reports = [meshrec.evaluate(method, "egobody-egohmr", tmp_path, body_model=body_models_dir, batch_size=size,
                                progress=False, cubes="from_pred")["metrics"] for size in (3, 1)]
    assert len(given) == 6 and all(np.abs(given[k] - expected["from_pred"][k % 3]).max() < 1e-9 for k in range(6))
    first, second = reports
    assert first["frames"] == 3 and first["cubes"] == "from_pred" and first["num_samples"] == 3
    for key in ("G-MPJPE", "MPJPE", "PA-MPJPE", "V2V", "apd-joints", "collision-ratio", "contact-ratio"):
        assert np.isfinite(first[key]), key
        # seeds per frame, not per batch: only float32 rounding of the batched networks differs (mm)
        assert first[key] == pytest.approx(second[key], rel=1e-5, abs=1e-4), key
    gt = meshrec.evaluate(method, "egobody-egohmr", tmp_path, body_model=body_models_dir, batch_size=3,
                          progress=False, cubes="from_gt", limit=1)["metrics"]
    assert gt["frames"] == 1 and np.isfinite(gt["MPJPE"])
    with pytest.raises(ValueError, match="cubes must be one of"):
        meshrec.evaluate(method, "egobody-egohmr", tmp_path, body_model=body_models_dir, cubes="offline")
