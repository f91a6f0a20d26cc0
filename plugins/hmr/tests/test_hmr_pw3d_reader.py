"""Reading mmhuman3d's HumanData pw3d_test.npz."""

from __future__ import annotations

import numpy as np
import pytest

from meshrec_hmr.pw3d import find_pw3d_annotations, read_pw3d_humandata
from pw3d_synthetic import write_synthetic_pw3d


def test_reads_the_humandata_layout(tmp_path):
    root = write_synthetic_pw3d(tmp_path / "pw3d", frames=5)
    annotations = read_pw3d_humandata(find_pw3d_annotations(root))
    assert len(annotations) == 5
    assert annotations.image_paths[0] == "imageFiles/downtown_synthetic_00/image_00000.jpg"
    assert annotations.boxes_xywh.shape == (5, 4) and annotations.body_pose.shape == (5, 23, 3)
    assert annotations.global_orient.shape == (5, 3) and annotations.betas.shape == (5, 10)
    assert list(annotations.genders) == ["f", "m", "m", "f", "m"]
    part = annotations.subset(slice(1, 3))
    assert len(part) == 2 and part.image_paths[0].endswith("image_00001.jpg")


def test_mmhuman3d_folder_layout_and_explicit_path(tmp_path):
    data = tmp_path / "data"
    root = write_synthetic_pw3d(data / "datasets" / "pw3d", frames=2)
    (data / "preprocessed_datasets").mkdir()
    (root / "pw3d_test.npz").rename(data / "preprocessed_datasets" / "pw3d_test.npz")
    assert find_pw3d_annotations(root) == data / "preprocessed_datasets" / "pw3d_test.npz"
    with pytest.raises(FileNotFoundError, match="pw3d_test.npz not found. Searched"):
        find_pw3d_annotations(tmp_path)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        find_pw3d_annotations(tmp_path, tmp_path / "x.npz")


def test_bad_files(tmp_path):
    spin = tmp_path / "spin.npz"
    np.savez(spin, imgname=np.array(["a"]), pose=np.zeros((1, 72)), shape=np.zeros((1, 10)))
    with pytest.raises(ValueError, match="SPIN's npz layout"):
        read_pw3d_humandata(spin)
    partial = tmp_path / "partial.npz"
    np.savez(partial, image_path=np.array(["a"]), bbox_xywh=np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"missing keys \['smpl', 'meta'\]"):
        read_pw3d_humandata(partial)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image_path=np.array(["a", "b"]), bbox_xywh=np.zeros((2, 5)), meta={"gender": np.array(["m", "x"])},
             smpl={"global_orient": np.zeros((2, 3)), "body_pose": np.zeros((2, 23, 3)), "betas": np.zeros((2, 10))})
    with pytest.raises(ValueError, match=r"genders must be 'm' or 'f', found \['x'\]"):
        read_pw3d_humandata(wrong)
