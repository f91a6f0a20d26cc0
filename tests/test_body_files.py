"""Body-model files: the restricted unpickler, npz, the search order and its errors."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import scipy.sparse

from meshrec.testing.fixtures import CodeRunningPayload
from meshrec.body import BodyModelNotFoundError, find_body_model_file, load_body_model_arrays, load_joint_regressor
from meshrec.body.files import body_model_search_dirs, smpl_file_names
from meshrec.errors import UnsafePickleError
from meshrec.testing import synthetic_smpl_arrays, write_synthetic_smpl
from meshrec.testing.legacy_pickle import ChumpyArray, dumps_python2

SMPL_SHAPES = {
    "v_template": (6890, 3), "f": (13776, 3), "J_regressor": (24, 6890), "J": (24, 3),
    "kintree_table": (2, 24), "weights": (6890, 24), "posedirs": (6890, 3, 207), "shapedirs": (6890, 3, 10),
}  # fmt: skip


def test_reads_the_python2_smpl_layout_without_chumpy(tmp_path):
    path = write_synthetic_smpl(tmp_path, gender="male")
    raw = path.read_bytes()
    # the file really refers to the legacy classes the official files use
    for name in (b"chumpy.ch\nCh", b"scipy.sparse.csc\ncsc_matrix", b"numpy.core.multiarray\n_reconstruct"):
        assert name in raw
    arrays = load_body_model_arrays(path)
    for key, shape in SMPL_SHAPES.items():
        assert arrays[key].shape == shape, key
    assert isinstance(arrays["shapedirs"], np.ndarray) and arrays["shapedirs"].dtype == np.float64
    assert scipy.sparse.issparse(arrays["J_regressor"])
    assert arrays["f"].dtype == np.uint32
    assert arrays["kintree_table"][0, 0] == 2**32 - 1
    assert arrays["bs_style"] == "lbs"
    expected = synthetic_smpl_arrays("male")
    np.testing.assert_allclose(arrays["v_template"], expected["v_template"], atol=1e-7)


def test_reads_npz(tmp_path):
    path = write_synthetic_smpl(tmp_path / "SMPL_NEUTRAL.npz", file_format="npz")
    arrays = load_body_model_arrays(path)
    for key, shape in SMPL_SHAPES.items():
        assert arrays[key].shape == shape, key


def test_npz_object_arrays_are_skipped_not_unpickled(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, v_template=np.zeros((3, 3)), evil=np.array([object()], dtype=object))
    arrays = load_body_model_arrays(path)
    assert set(arrays) == {"v_template"}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_executing_pickle_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "executed"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros(3), "payload": CodeRunningPayload(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (posix|os)\.system.*Nothing from the file was executed"):
        load_body_model_arrays(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
                                          ("numpy", "load"), ("torch", "load"), ("_codecs", "decode")])
def test_other_globals_are_refused(tmp_path, module, name):
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        load_body_model_arrays(path)


def test_codec_other_than_latin1_is_refused(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UnsafePickleError, match="latin-1"):
        load_body_model_arrays(path)


def test_truncated_and_foreign_files(tmp_path):
    good = write_synthetic_smpl(tmp_path)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable body-model pickle"):
        load_body_model_arrays(truncated)
    not_a_dict = tmp_path / "list.pkl"
    not_a_dict.write_bytes(dumps_python2({"a": 1})[:-2] + b".")  # an int, not a dict
    with pytest.raises(ValueError):
        load_body_model_arrays(not_a_dict)
    text = tmp_path / "model.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"\.pkl or \.npz"):
        load_body_model_arrays(text)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_body_model_arrays(bad_npz)


def test_derived_chumpy_objects_explain_themselves(tmp_path):
    content = dumps_python2({"shapedirs": ChumpyArray(np.zeros(3))}).replace(b"chumpy.ch\nCh\n", b"chumpy.ch\nXx\n")
    path = tmp_path / "derived.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="chumpy expression"):
        load_body_model_arrays(path)


def test_search_order_argument_then_variable_then_home(tmp_path, monkeypatch):
    argument, variable, home = tmp_path / "argument", tmp_path / "variable", tmp_path / "home"
    cache = home / ".cache" / "meshrec" / "body_models"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(variable))
    assert body_model_search_dirs(argument) == [argument, variable, cache]
    for folder in (argument, variable, cache):
        folder.mkdir(parents=True)
    (cache / "SMPL_NEUTRAL.pkl").write_bytes(b"x")
    assert find_body_model_file(smpl_file_names("neutral"), argument) == cache / "SMPL_NEUTRAL.pkl"
    (variable / "smpl").mkdir()
    (variable / "smpl" / "SMPL_NEUTRAL.pkl").write_bytes(b"x")
    assert find_body_model_file(smpl_file_names("neutral"), argument) == variable / "smpl" / "SMPL_NEUTRAL.pkl"
    (argument / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").write_bytes(b"x")
    assert find_body_model_file(smpl_file_names("neutral"), argument).name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    explicit = tmp_path / "elsewhere.pkl"
    explicit.write_bytes(b"x")
    assert find_body_model_file(smpl_file_names("neutral"), explicit) == explicit


def test_lookup_ignores_case(tmp_path):
    (tmp_path / "smpl_neutral.PKL").write_bytes(b"x")
    assert find_body_model_file(["SMPL_NEUTRAL.pkl"], tmp_path) == tmp_path / "smpl_neutral.PKL"


def test_missing_file_names_every_place_and_the_registration_site(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "variable"))
    with pytest.raises(BodyModelNotFoundError) as caught:
        find_body_model_file(smpl_file_names("female"), tmp_path / "argument")
    message = str(caught.value)
    assert "https://smpl.is.tue.mpg.de" in message
    for place in ("argument/SMPL_FEMALE.pkl", "variable/SMPL_FEMALE.pkl", ".cache/meshrec/body_models/SMPL_FEMALE.pkl",
                  "argument/smpl/SMPL_FEMALE.pkl"):
        assert place in message
    assert isinstance(caught.value, FileNotFoundError)
    with pytest.raises(BodyModelNotFoundError, match="missing.pkl"):
        find_body_model_file(["SMPL_NEUTRAL.pkl"], tmp_path / "missing.pkl")


def test_bad_gender():
    with pytest.raises(ValueError, match="gender must be one of"):
        smpl_file_names("other")


def test_joint_regressor(body_models_dir):
    regressor = load_joint_regressor("J_regressor_h36m.npy", body_models_dir)
    assert regressor.shape == (17, 6890) and regressor.dtype == np.float64
    np.testing.assert_allclose(regressor.sum(1), 1, atol=1e-9)
    with pytest.raises(BodyModelNotFoundError, match="J_regressor_missing.npy"):
        load_joint_regressor("J_regressor_missing.npy", body_models_dir)


def test_standard_unpickler_reads_the_writer_output_too(monkeypatch):
    # The synthetic file is a faithful Python 2 pickle: a normal unpickler with chumpy present
    # (faked here) reads the same content, as smplx would.
    import sys
    import types

    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __setstate__(self, state):
            self.__dict__.update(state)

    chumpy_ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
    data = {"x": np.arange(12.0).reshape(3, 4), "s": ChumpyArray(np.ones((2, 3))), "j": scipy.sparse.eye(3).tocsc()}
    with pytest.warns(DeprecationWarning):  # scipy.sparse.csc is the legacy path, as in SMPL files
        loaded = pickle.load(io.BytesIO(dumps_python2(data)), encoding="latin1")
    np.testing.assert_array_equal(loaded["x"], data["x"])
    np.testing.assert_array_equal(loaded["s"].x, np.ones((2, 3)))
    assert (loaded["j"] != data["j"]).nnz == 0


# ---- non-finite arrays are refused, naming the file and the key (issue 13) ---------------------

@pytest.mark.parametrize("file_format", ["pkl", "npz"])
def test_nan_arrays_in_a_body_model_are_refused(tmp_path, file_format):
    path = write_synthetic_smpl(tmp_path / f"SMPL_NEUTRAL.{file_format}", file_format=file_format)
    arrays = load_body_model_arrays(path)
    assert np.isfinite(arrays["v_template"]).all()
    arrays["v_template"] = np.array(arrays["v_template"])
    arrays["v_template"][10, 1] = np.nan
    bad = tmp_path / f"bad_SMPL_NEUTRAL.{file_format}"
    plain = {key: (value.toarray() if scipy.sparse.issparse(value) else value) for key, value in arrays.items()}
    if file_format == "npz":
        np.savez(bad, **plain)
    else:
        bad.write_bytes(pickle.dumps(plain, protocol=2))
    with pytest.raises(ValueError, match=rf"{bad.name}: array 'v_template' holds 1 NaN or infinite"):
        load_body_model_arrays(bad)


def test_nan_in_a_sparse_regressor_or_an_npy_regressor_is_refused(tmp_path):
    regressor = scipy.sparse.csc_matrix(np.eye(3, 5))
    regressor.data[1] = np.inf
    pkl = tmp_path / "J_regressor_extra.pkl"
    pkl.write_bytes(pickle.dumps({"J_regressor": regressor}, protocol=2))
    with pytest.raises(ValueError, match="'J_regressor' holds 1 NaN or infinite"):
        load_body_model_arrays(pkl)
    dense = np.eye(3, 5)
    dense[0, 4] = np.nan
    np.save(tmp_path / "J_regressor_h36m.npy", dense)
    with pytest.raises(ValueError, match=r"J_regressor_h36m.npy: array 'J_regressor_h36m' holds 1 NaN"):
        load_joint_regressor(str(tmp_path / "J_regressor_h36m.npy"))
