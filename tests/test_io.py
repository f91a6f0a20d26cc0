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


# ---- bounded loaders (issue 13) -------------------------------------------------------------------

import struct  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

from meshrec.errors import CheckpointError  # noqa: E402
from meshrec.io import checkpoints  # noqa: E402
from meshrec.io.safe_pickle import ResourceLimitError, expanded_size, npz_keys, restricted_load  # noqa: E402


def memo_bomb(depth: int = 9, width: int = 10) -> bytes:
    """A ~320-byte pickle of {"v_template": L} where L nests `depth` lists of `width` references
    to the same inner list: 10^9 floats once converted to an array (150 s and 8 GB with numpy)."""
    out = [b"\x80\x02}", b"X" + struct.pack("<I", 10) + b"v_template", b"]("]
    out += [b"G" + struct.pack(">d", 1.0)] * width
    out += [b"eq\x00"]
    for level in range(1, depth):
        out += [b"0](", (b"h" + bytes([level - 1])) * width, b"eq" + bytes([level])]
    out += [b"s."]
    return b"".join(out)


def test_memo_bomb_pickle_is_refused_before_anything_is_built(tmp_path):
    from meshrec.body import load_body_model_arrays

    data = memo_bomb()
    assert len(data) < 500
    start = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="shared references expanded"):
        restricted_load(data)
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(data)
    with pytest.raises(ResourceLimitError, match="SMPL_NEUTRAL.pkl"):
        load_body_model_arrays(path)
    assert time.perf_counter() - start < 30  # linear in the distinct objects, not the expansion
    # The measure itself: shared references count every time, a cycle once.
    inner = [1.0] * 10
    assert expanded_size([inner, inner]) == 2 * 8 + 2 * (10 * 8 + 10 * 8)
    loop: list = []
    loop.append(loop)
    assert expanded_size(loop) == 8


def test_pickled_array_with_a_huge_declared_shape_is_refused():
    header = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01"
    # _reconstruct(ndarray, (2**40,), b'b'): allocates the shape at once
    body = b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85C\x01b\x87R."
    with pytest.raises(ResourceLimitError, match="shape"):
        restricted_load(header + body)


def test_limit_comes_from_the_environment(monkeypatch):
    value = {"a": np.zeros(1000)}
    monkeypatch.setenv("MESHREC_MAX_ARRAY_BYTES", "4000")
    import pickle

    with pytest.raises(ResourceLimitError, match="MESHREC_MAX_ARRAY_BYTES"):
        restricted_load(pickle.dumps(value, protocol=2))
    monkeypatch.setenv("MESHREC_MAX_ARRAY_BYTES", "1e6")
    assert restricted_load(pickle.dumps(value, protocol=2))["a"].shape == (1000,)


def zip_bomb(path, junk_mb: int = 64):
    np.savez_compressed(path, image_path=np.array(["a.jpg"]), junk=np.zeros(junk_mb << 17))  # 8-byte floats
    return path


def test_npz_members_are_bounded_before_decompression(tmp_path):
    path = zip_bomb(tmp_path / "bomb.npz")
    assert path.stat().st_size < 1 << 20 and set(npz_keys(path)) == {"image_path", "junk"}
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="junk"):
            load_npz(path, limit=1 << 20)
        # only the wanted keys are read: the 64 MB member is never decompressed
        assert list(load_npz(path, keys=["image_path"], limit=1 << 20)) == ["image_path"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    with pytest.raises(ValueError, match=r"missing keys \['smpl'\]"):
        load_npz(path, required=["image_path", "smpl"])


def test_npz_header_declaring_more_than_the_limit_is_refused(tmp_path):
    """A member whose .npy header declares a terabyte is refused from the header alone."""
    import io
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros(4))
    header["shape"] = (10**12,)
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    path = tmp_path / "lying.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", stream.getvalue() + bytes(32))
    with pytest.raises(ResourceLimitError, match=r"array 'a' of shape \(1000000000000,\)"):
        load_npz(path)


def test_humandata_with_nan_poses_is_refused_naming_the_key(tmp_path):
    pw3d = pytest.importorskip("meshrec_hmr.pw3d")
    pose = np.zeros((2, 69))
    pose[1, 5] = np.nan
    path = tmp_path / "pw3d_test.npz"
    np.savez_compressed(path, image_path=np.array(["a.jpg", "b.jpg"]), bbox_xywh=np.ones((2, 5)),
                        smpl={"global_orient": np.zeros((2, 3)), "body_pose": pose, "betas": np.zeros((2, 10))},
                        meta={"gender": np.array(["m", "f"])}, junk=np.zeros(64 << 17))
    with pytest.raises(ValueError, match=r"pw3d_test.npz: key 'smpl.body_pose' holds 1 NaN"):
        pw3d.read_pw3d_humandata(path)
    pose[1, 5] = 0.0
    np.savez_compressed(path, image_path=np.array(["a.jpg", "b.jpg"]), bbox_xywh=np.ones((2, 5)),
                        smpl={"global_orient": np.zeros((2, 3)), "body_pose": pose, "betas": np.zeros((2, 10))},
                        meta={"gender": np.array(["m", "f"])})
    assert len(pw3d.read_pw3d_humandata(path)) == 2


# ---- checkpoints: names' SHA-256 prefixes, registered hashes, non-finite weights ------------------

def _saved(tmp_path, name="model.pth", **tensors):
    path = tmp_path / name
    torch.save(tensors or {"weight": torch.ones(3)}, path)
    return path


def test_checkpoint_name_hash_is_verified(tmp_path):
    plain = _saved(tmp_path)
    digest = checkpoints.checkpoint_sha256(plain)
    good = plain.rename(tmp_path / f"resnet50_hmr_gta_bt-{digest[:8]}_20220416.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoints.verify_checkpoint_hash(good) is True
        checkpoints.load_checkpoint(good)
    flipped = tmp_path / f"resnet50-{'0' * 8}.pth"
    flipped.write_bytes(good.read_bytes())
    with pytest.warns(checkpoints.CheckpointHashWarning, match="does not match 00000000 from its file name"):
        checkpoints.load_checkpoint(flipped)
    assert checkpoints.verify_checkpoint_hash(_saved(tmp_path, "no_hash_here.pth")) is None


def test_registered_hashes_catch_a_bit_flip(tmp_path):
    path = _saved(tmp_path, "upstream_release.pth", weight=torch.arange(64.0))
    checkpoints.register_checkpoint_hashes({"upstream_release.pth": checkpoints.checkpoint_sha256(path)},
                                           owner="meshrec-test")
    assert checkpoints.verify_checkpoint_hash(path) is True
    data = bytearray(path.read_bytes())
    offset = data.find(struct.pack("<f", 40.0))
    data[offset + 3] ^= 0x01  # one bit of one stored weight: torch still loads it silently
    path.write_bytes(bytes(data))
    with pytest.warns(checkpoints.CheckpointHashWarning, match="registered by meshrec-test"):
        loaded = checkpoints.load_checkpoint(path)
    assert not torch.equal(loaded["weight"], torch.arange(64.0))
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        checkpoints.register_checkpoint_hashes({"x.pth": "abc"}, owner="t")


def test_non_finite_weights_are_refused_naming_file_and_key():
    network = torch.nn.Linear(3, 2)
    network.register_buffer("mask", torch.zeros(2))
    state = {key: value.clone() for key, value in network.state_dict().items()}
    state["weight"][1, 2] = float("nan")
    with pytest.raises(CheckpointError, match=r"ckpt.pth: weight holds 1 NaN or infinite"):
        checkpoints.load_state_dict_strict(network, state, "ckpt.pth")
    state["weight"][1, 2] = float("inf")
    with pytest.raises(CheckpointError, match="weight holds 1"):
        checkpoints.load_state_dict_strict(network, state, "ckpt.pth")
    state["weight"][1, 2] = 0.0
    state["mask"][0] = float("-inf")  # buffers may hold infinities (attention masks) ...
    checkpoints.load_state_dict_strict(network, state, "ckpt.pth")
    state["mask"][0] = float("nan")  # ... never NaN
    with pytest.raises(CheckpointError, match="mask holds 1 NaN"):
        checkpoints.load_state_dict_strict(network, state, "ckpt.pth")


def test_relative_human_annotations_that_run_code_are_refused(tmp_path):
    """MA-HMR's Relative Human reader used np.load(allow_pickle=True): a downloaded annotation
    file could run code. It now goes through the restricted unpickler."""
    evaluation = pytest.importorskip("meshrec_mahmr.evaluation")
    marker = tmp_path / "executed"
    np.savez(tmp_path / "test_annots.npz", annots=np.array({"a.jpg": [CodeRunningPayload(marker)]}, dtype=object))
    with pytest.raises(UnsafePickleError, match="system"):
        evaluation.read_relative_human(tmp_path)
    assert not marker.exists()
