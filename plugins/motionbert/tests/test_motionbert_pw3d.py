"""pw3d-motionbert: MotionBERT's 3DPW pickle, clips and metrics, on a synthetic file in the exact layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import meshrec
from meshrec_motionbert.evaluation import evaluate_pw3d_motionbert, read_mesh_pickle, split_clips
from meshrec_motionbert.keypoints import flip_keypoints
from motionbert_small import small_method

SEQUENCES = (("courtyard_arguing_000", 37), ("downtown_walking_001", 10), ("office_phoneCall_000", 16))


def _split(rng, count_scale=1.0):
    count = sum(n for _, n in SEQUENCES)
    return {
        "joint_2d": rng.uniform(600, 1300, (count, 17, 2)),  # float64 pixels
        "confidence": rng.uniform(0.2, 1.2, (count, 17, 1)).astype(np.float32),  # clipped to 1 on reading
        "joint_cam": rng.normal(size=(count, 17, 3)),
        "smpl_pose": rng.normal(scale=0.2, size=(count, 72)),
        "smpl_shape": rng.normal(scale=0.5, size=(count, 10)),
        "img_hw": [(1920, 1920)] * count,
        "image_id": [np.array([i]) for i in range(count)],
        "source": [name for name, n in SEQUENCES for _ in range(n)],
    }


@pytest.fixture(scope="module")
def mesh_pickle(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mesh") / "mesh_det_pw3d.pkl"
    path.write_bytes(pickle.dumps({"train": _split(rng), "test": _split(rng)}, protocol=4))
    return path


def test_clips_as_upstream_cuts_them():
    source = ["a"] * 37 + ["b"] * 10 + ["c"] * 16
    clips = split_clips(source)
    assert [c.tolist() for c in clips[:2]] == [list(range(16)), list(range(16, 32))]  # tail 32..36 dropped
    assert clips[2].tolist() == (37 + np.linspace(0, 10, 16, endpoint=False).astype(int)).tolist()  # resampled
    assert clips[3].tolist() == list(range(47, 63))
    assert len(clips) == 4


def test_reader(mesh_pickle):
    data = read_mesh_pickle(mesh_pickle)
    assert data.keypoints.shape == (63, 17, 3) and data.pose.shape == (63, 72) and len(data) == 63
    with pytest.raises(ValueError, match="split 'val'|\\{'train'"):
        read_mesh_pickle(mesh_pickle, split="val")


class _Payload:
    def __reduce__(self):
        return (print, ("must not run",))


def test_reader_refuses_code(tmp_path):
    path = tmp_path / "mesh_det_pw3d.pkl"
    path.write_bytes(pickle.dumps({"test": {"source": _Payload()}}))
    with pytest.raises(meshrec.UnsafePickleError):
        read_mesh_pickle(path)


def _rigid_align(a, b):
    """Similarity transform of a onto b (upstream rigid_transform_3D, SVD with reflection fix)."""
    ca, cb = a.mean(0), b.mean(0)
    h = (a - ca).T @ (b - cb) / len(a)
    u, s, vt = np.linalg.svd(h)
    r = vt.T @ u.T
    if np.linalg.det(r) < 0:
        s[-1] = -s[-1]
        vt[2] *= -1
        r = vt.T @ u.T
    scale = s.sum() / ((a - ca) ** 2).sum() * len(a)
    return scale * a @ r.T + (cb - scale * r @ ca)


@pytest.mark.parametrize("flip", [False, True])
def test_metrics_equal_an_independent_computation(mesh_pickle, motionbert_body_models, flip):
    method = small_method(motionbert_body_models, seed=3)
    result = evaluate_pw3d_motionbert(method, mesh_pickle.parent, motionbert_body_models, batch_size=3,
                                      progress=False, flip=flip)
    assert result["num_clips"] == 4 and result["num_samples"] == 64
    # independent: upstream's validate and evaluate_mesh, in numpy
    data = read_mesh_pickle(mesh_pickle)
    index = np.stack(split_clips(data.source))
    x = data.keypoints[index].copy()
    x[..., :2] = x[..., :2] / 1920 * 2 - 1
    x[..., 2] = np.clip(x[..., 2], 0, 1)
    x = torch.as_tensor(x)
    smpl, regressor = method.model._body
    dense = regressor.to_dense()
    with torch.no_grad():
        verts = method.model(x)[0]["verts"].reshape(-1, 6890, 3)
        if flip:
            theta = method.model(flip_keypoints(x))[0]["theta"].reshape(-1, 82)
            pose = theta[:, :72].reshape(-1, 24, 3) * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
            pairs = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
            pose = pose[:, pairs].reshape(-1, 72)
            back = smpl(betas=theta[:, 72:], body_pose=pose[:, 3:], global_orient=pose[:, :3], pose2rot=True)
            verts = (verts + back.vertices * 1000) / 2
        flat = torch.as_tensor(index.reshape(-1))
        gt = smpl(betas=torch.as_tensor(data.shape)[flat], body_pose=torch.as_tensor(data.pose)[flat, 3:],
                  global_orient=torch.as_tensor(data.pose)[flat, :3], pose2rot=True).vertices * 1000
    pred_j, gt_j = (dense @ verts).numpy(), (dense @ gt).numpy()
    verts, gt = verts.numpy(), gt.numpy()
    mpve = np.linalg.norm((verts - pred_j[:, :1]) - (gt - gt_j[:, :1]), axis=-1).mean()
    pred_j, gt_j = pred_j - pred_j[:, :1], gt_j - gt_j[:, :1]
    j14 = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    mpjpe = np.linalg.norm(pred_j[:, j14] - gt_j[:, j14], axis=-1).mean()
    pa = np.mean([np.linalg.norm(_rigid_align(p[j14], g[j14]) - g[j14], axis=-1).mean() for p, g in zip(pred_j, gt_j)])
    mpjpe_17 = np.linalg.norm(pred_j - gt_j, axis=-1).mean()
    assert result["mpve"] == pytest.approx(mpve, rel=1e-9)
    assert result["mpjpe"] == pytest.approx(mpjpe, rel=1e-9)
    assert result["pa_mpjpe"] == pytest.approx(pa, rel=1e-7)
    assert result["mpjpe_17j"] == pytest.approx(mpjpe_17, rel=1e-9)
    assert 0 < result["pa_mpjpe"] < result["mpjpe"]


def test_through_meshrec_evaluate(plugin_manager, mesh_pickle, motionbert_body_models):
    from meshrec_motionbert import plugin

    plugin_manager.register(plugin, name="motionbert")
    method = small_method(motionbert_body_models, seed=3)
    result = meshrec.evaluate(method, "pw3d-motionbert", mesh_pickle.parent, body_model=motionbert_body_models,
                              batch_size=4, progress=False, limit=2, flip=False)
    metrics = result["metrics"]
    assert metrics["num_clips"] == 2 and metrics["num_samples"] == 32 and not metrics["complete"]
    assert metrics["protocol"] == "3dpw-motionbert" and metrics["mpve"] > 0
