"""Restricted reading of npz files with object arrays (HumanData), and mesh writers."""

from __future__ import annotations


import numpy as np
import pytest

from meshrec.testing.fixtures import CodeRunningPayload
from meshrec.errors import UnsafePickleError
from meshrec.io import write_obj, write_ply
from meshrec.io.safe_pickle import load_npz


def test_npz_with_objects_as_humandata_stores_them(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, image_path=["a.jpg", "b.jpg"], bbox_xywh=np.ones((2, 5)), config="3dpw",
                        smpl={"betas": np.zeros((2, 10)), "body_pose": np.zeros((2, 23, 3))},
                        meta={"gender": np.array(["m", "f"])}, cam_param=[{"K": [[1.0]]}, {"K": [[2.0]]}])
    data = load_npz(path)
    assert data["smpl"]["body_pose"].shape == (2, 23, 3) and list(data["meta"]["gender"]) == ["m", "f"]
    assert list(data["image_path"]) == ["a.jpg", "b.jpg"] and str(data["config"]) == "3dpw"
    assert data["cam_param"][1]["K"] == [[2.0]]
    assert "smpl" not in load_npz(path, allow_objects=False)


def test_npz_object_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array({"x": CodeRunningPayload(marker)}, dtype=object))
    with pytest.raises(UnsafePickleError, match="system"):
        load_npz(path)
    assert not marker.exists()


def test_npz_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(bad)


def test_ply_and_obj(tmp_path):
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = np.array([[0, 1, 2]])
    ply = write_ply(tmp_path / "m.ply", vertices, faces, colors=np.full((3, 3), 200))
    header, body = ply.read_bytes().split(b"end_header\n")
    assert b"element vertex 3" in header and b"element face 1" in header and b"property uchar red" in header
    assert len(body) == 3 * (12 + 3) + 1 + 12
    points = write_ply(tmp_path / "p.ply", vertices)
    assert b"element face" not in points.read_bytes()
    obj = write_obj(tmp_path / "m.obj", vertices, faces).read_text().splitlines()
    assert obj[0] == "v 0.000000 0.000000 0.000000" and obj[-1] == "f 1 2 3"
    with pytest.raises(ValueError, match=r"vertices must have shape \(N, 3\)"):
        write_ply(tmp_path / "x.ply", np.zeros((3, 2)))
