"""rich-sahmr / prox-sahmr on synthetic sahmr_support folders in the released layout."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse
import torch

import meshrec
from meshrec.io.meshes import write_ply
from meshrec_sahmr import plugin
from meshrec_sahmr.evaluation import evaluate_prox, evaluate_rich, read_rich, run_network
from meshrec_sahmr.method import crop_square
from meshrec_sahmr.scene import square_box
from sahmr_synthetic import scene_points

J14 = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def ply(path, vertices):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ply(path, vertices)


def sdf_grid(folder, stem):
    """A 5^3 grid over [-10, 10]^3 whose value is the x coordinate (trilinear sampling is exact)."""
    coords = np.linspace(-10, 10, 5)
    grid = np.broadcast_to(coords[:, None, None], (5, 5, 5)).copy()
    (folder / f"{stem}.json").write_text(json.dumps({"min": [-10, -10, -10], "max": [10, 10, 10], "dim": 5}))
    np.save(folder / f"{stem}.npy", grid.ravel())


def transfer_file(folder, rng):
    chosen = rng.choice(10475, 6890, replace=False)
    matrix = scipy.sparse.csr_matrix((np.ones(6890), (np.arange(6890), chosen)), shape=(6890, 10475))
    path = folder / "smplx2smplh_deftrafo_setup.pkl"
    path.write_bytes(pickle.dumps({"mtx": matrix}, protocol=2))
    return path, chosen


def expected_metrics(preds_world, gts_world, regressor, contacts):
    rows = {k: [] for k in ("GMPJPE", "GMPVE", "MPJPE", "MPVE", "PenE", "ConFE")}
    for pred, gt, contact in zip(preds_world, gts_world, contacts):
        jp, jg = regressor @ pred, regressor @ gt
        shift = jg[0] - jp[0]
        rows["GMPJPE"].append(np.linalg.norm(jp[J14] - jg[J14], axis=1).mean() * 1000)
        rows["GMPVE"].append(np.linalg.norm(pred - gt, axis=1).mean() * 1000)
        rows["MPJPE"].append(np.linalg.norm(jp[J14] + shift - jg[J14], axis=1).mean() * 1000)
        rows["MPVE"].append(np.linalg.norm(pred + shift - gt, axis=1).mean() * 1000)
        x = np.clip(pred[:, 0], -10, 10)  # the SDF is x (border-clamped)
        penetration = np.maximum(-x, 0)
        rows["PenE"].append(penetration.sum())
        rows["ConFE"].append(np.where(contact, np.abs(x), penetration).sum())
    return {k: float(np.mean(v)) for k, v in rows.items()}


@pytest.fixture
def sahmr(plugin_manager, sahmr_files, body_models_dir, tmp_path):
    plugin_manager.register(plugin, name="sahmr")
    support = tmp_path / "support"
    shutil.copytree(sahmr_files[1], support)
    shutil.copy(next(body_models_dir.rglob("J_regressor_h36m.npy")), support)
    return meshrec.load_method("sahmr", checkpoint=sahmr_files[0], body_model=body_models_dir, device="cpu",
                               support_dir=str(support))


def write_synthetic_rich(tmp_path, frames=2):
    """``tmp_path/RICH/sahmr_support`` with ``frames`` test frames of one scan in the released
    layout, and the transfer file; returns (transfer, chosen, K, R, t, camera_points)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "RICH" / "sahmr_support"
    info = root / "scene_info" / "Gym"
    (info / "calibration").mkdir(parents=True)
    R = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)  # world z-up -> camera y-down
    t = np.array([0.2, 1.0, 0.5])
    xml = ("<opencv_storage><CameraMatrix><data>{}</data></CameraMatrix><Intrinsics><data>{}</data></Intrinsics>"
           "<Distortion><data>0 0 0 0 0</data></Distortion></opencv_storage>")
    K = np.array([[1000.0, 0, 512], [0, 1000, 376], [0, 0, 1]])
    (info / "calibration" / "003.xml").write_text(xml.format(" ".join(map(str, np.c_[R, t].ravel())),
                                                              " ".join(map(str, K.ravel()))))
    camera_points = scene_points().astype(np.float64)
    world = (camera_points - t) @ R  # inverse of x_c = R x_w + t
    np.save(info / "scan_camcoord_world.npy", {"points": world, "pitch": [0.02]}, allow_pickle=True)
    sdf_grid(info, "scan_camcoord_mysdf")
    test = root / "test_split"
    metas = []
    for i in range(frames):
        key = f"Gym_003_{i:05d}"
        metas.append({"img_key": key, "cam_key": "Gym_3", "cap_name": "Gym", "scan_name": "scan_camcoord",
                      "scene_key": "Gym_scan_camcoord", "contact_file": f"/data/test_contact/Gym/seq/{i:05d}.npy",
                      "test_squared_bbx_lurb": np.array([380.0 + 10 * i, 200, 680 + 10 * i, 500])})
        write_png(test / "image" / f"{key}.png", rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
        gt = rng.normal(0, 0.3, (10475, 3)) + np.array([0.0, 2.5, 1.0])
        ply(test / "gt_smplx_mesh" / f"{key}.ply", gt)
        (test / "contact" / "Gym" / "seq").mkdir(parents=True, exist_ok=True)
        np.save(test / "contact" / "Gym" / "seq" / f"{i:05d}.npy", np.packbits(rng.random(6890) < 0.1))
    (test / "meta").mkdir(parents=True)
    np.save(test / "meta" / "test3116.npy", np.array(metas, dtype=object), allow_pickle=True)
    transfer, chosen = transfer_file(tmp_path, rng)
    return transfer, chosen, K, R, t, camera_points


@pytest.mark.slow
def test_rich_sahmr_on_a_synthetic_support_folder(sahmr, tmp_path):
    transfer, chosen, K, R, t, camera_points = write_synthetic_rich(tmp_path)
    root = tmp_path / "RICH" / "sahmr_support"

    support, frames = read_rich(tmp_path / "RICH")
    assert support == root and [f.img_key for f in frames] == ["Gym_003_00000", "Gym_003_00001"]
    torch.testing.assert_close(frames[0].K, torch.from_numpy(K))
    result = evaluate_rich(sahmr, tmp_path / "RICH", transfer=transfer)
    assert result["num_samples"] == 2 and result["complete"] and result["protocol"] == "rich-sahmr"

    # independent: the network on the same inputs, then the metrics by hand in the world frame
    from PIL import Image
    from meshrec.io.meshes import read_ply_points
    regressor = sahmr.regressor.double().numpy()
    preds, gts, contacts = [], [], []
    for i, frame in enumerate(frames):
        image = torch.from_numpy(np.array(Image.open(frame.image))).permute(2, 0, 1).float() / 255
        pred = run_network(sahmr, image, torch.from_numpy(frame.bbx_lurb), torch.from_numpy(K),
                           torch.from_numpy(camera_points)).double().numpy()
        preds.append((pred - t) @ R)
        gts.append(read_ply_points(frame.gt_mesh)[chosen])
        contacts.append(np.unpackbits(np.load(frame.contact), count=6890).astype(bool))
    expected = expected_metrics(preds, gts, regressor, contacts)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def write_synthetic_prox(tmp_path, frames=1):
    """``tmp_path/quantitative/sahmr_support`` in the released layout with ``frames`` frames
    (the first as below, more drawn after the transfer file); returns (transfer, chosen,
    T_c2w, camera_points, image, gt_camera, box) of the first frame."""
    rng = np.random.default_rng(1)
    root = tmp_path / "quantitative" / "sahmr_support"
    (root / "vicon" / "calibration").mkdir(parents=True)
    (root / "vicon" / "calibration" / "Color.json").write_text(json.dumps({"f": [900.0, 905.0], "c": [320.0, 240.0]}))
    T_c2w = np.eye(4)
    T_c2w[:3, 3] = [1.0, -2.0, 0.5]
    (root / "vicon" / "calibration" / "cam2world_vicon.json").write_text(json.dumps(T_c2w.tolist()))
    camera_points = scene_points(seed=3).astype(np.float64)
    np.save(root / "vicon" / "vicon_voxel_world.npy", {"points": camera_points + T_c2w[:3, 3], "pitch": [0.02]},
            allow_pickle=True)
    sdf_grid(root / "vicon", "vicon")
    sdf_grid(root / "vicon", "vicon_sdf")  # vicon.json + vicon_sdf.npy are read
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    write_png(root / "image" / "vicon_03301_01" / "Color" / "s001_frame_00001.png", image)
    gt_camera = rng.normal(0, 0.3, (10475, 3)) + np.array([0.0, 0.2, 2.5])
    ply(root / "gt_mosh_mesh" / "vicon_03301_01" / "00001.ply", gt_camera)
    gt_camera = gt_camera.astype(np.float32).astype(np.float64)  # PLY stores float32
    metas = [{"scene_name": "vicon", "img_key": "vicon_03301_01_s001_frame_00001",
              "img_file": "/x/recordings/vicon_03301_01/Color/s001_frame_00001.png",
              "body_file": "/x/mosh/vicon_03301_01/00001.ply"}]
    (root / "meta").mkdir()
    (root / "meta" / "mosh_mesh_test.pkl").write_bytes(pickle.dumps(metas, protocol=2))
    (root / "img2gtbbx").mkdir()
    box = np.array([250.0, 120.0, 390.0, 400.0])
    (root / "img2gtbbx" / "mosh_mesh.pkl").write_bytes(pickle.dumps({metas[0]["img_key"]: box}, protocol=2))
    transfer, chosen = transfer_file(tmp_path, rng)
    for i in range(1, frames):  # more frames, each with its own image, box and ground truth
        metas.append({"scene_name": "vicon", "img_key": f"vicon_03301_01_s001_frame_{i + 1:05d}",
                      "img_file": f"/x/recordings/vicon_03301_01/Color/s001_frame_{i + 1:05d}.png",
                      "body_file": f"/x/mosh/vicon_03301_01/{i + 1:05d}.ply"})
        write_png(root / "image" / "vicon_03301_01" / "Color" / f"s001_frame_{i + 1:05d}.png",
                  rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        ply(root / "gt_mosh_mesh" / "vicon_03301_01" / f"{i + 1:05d}.ply",
            rng.normal(0, 0.3, (10475, 3)) + np.array([0.0, 0.2, 2.5]))
    if frames > 1:
        boxes = {meta["img_key"]: box + 7.0 * i for i, meta in enumerate(metas)}
        (root / "meta" / "mosh_mesh_test.pkl").write_bytes(pickle.dumps(metas, protocol=2))
        (root / "img2gtbbx" / "mosh_mesh.pkl").write_bytes(pickle.dumps(boxes, protocol=2))
    return transfer, chosen, T_c2w, camera_points, image, gt_camera, box


@pytest.mark.slow
def test_prox_sahmr_on_a_synthetic_support_folder(sahmr, tmp_path):
    transfer, chosen, T_c2w, camera_points, image, gt_camera, box = write_synthetic_prox(tmp_path)

    result = evaluate_prox(sahmr, tmp_path / "quantitative", transfer=transfer)
    assert result["num_samples"] == 1 and result["protocol"] == "prox-sahmr"
    assert result["ConFE"] == pytest.approx(result["PenE"])  # no contact labels on PROX

    K = torch.tensor([[900.0, 0, 320], [0, 905, 240], [0, 0, 1]], dtype=torch.float64)
    flipped = torch.from_numpy(image[:, ::-1].copy()).permute(2, 0, 1).float() / 255
    lurb = square_box(torch.from_numpy(box), 1.15)
    pred = run_network(sahmr, crop_square(flipped, lurb.float()), lurb, K, torch.from_numpy(camera_points))
    expected = expected_metrics([pred.double().numpy() + T_c2w[:3, 3]], [gt_camera[chosen] + T_c2w[:3, 3]],
                                sahmr.regressor.double().numpy(), [np.zeros(6890, bool)])
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_missing_support_folder(sahmr, tmp_path):
    with pytest.raises(FileNotFoundError, match="sahmr_support"):
        evaluate_rich(sahmr, tmp_path)
