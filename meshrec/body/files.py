"""Finding and reading body-model files (SMPL, SMPL-H, kid template, joint regressors).

The official SMPL ``.pkl`` files were pickled under Python 2 and contain chumpy objects and scipy
sparse matrices. They are read here without chumpy, through a restricted unpickler that admits
only the numpy, scipy-sparse and chumpy array classes such files contain; anything else in a
pickle (a function to call, a module attribute) is refused before it can run.

Search order for a file: the ``location`` argument (a file, or a folder), then the folder in the
``MESHREC_BODY_MODELS`` environment variable, then ``~/.cache/meshrec/body_models``. In each
folder the file is looked up directly and in the ``smpl/``, ``smplh/`` sub-folders smplx users
keep, ignoring case.
"""

from __future__ import annotations

import codecs
import copyreg
import importlib
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import scipy.sparse

from meshrec.errors import BodyModelNotFoundError, UnsafePickleError

__all__ = [
    "BODY_MODELS_VARIABLE",
    "GENDERS",
    "body_model_search_dirs",
    "find_body_model_file",
    "load_body_model_arrays",
    "load_joint_regressor",
    "smpl_file_names",
    "smplh_file_names",
]

BODY_MODELS_VARIABLE = "MESHREC_BODY_MODELS"
DEFAULT_BODY_MODELS_DIR = Path("~/.cache/meshrec/body_models")
GENDERS = ("neutral", "male", "female")
_SUBDIRS = ("", "smpl", "smplh", "body_models")
PathLike = str | os.PathLike


def smpl_file_names(gender: str) -> list[str]:
    """File names an SMPL model of ``gender`` is known under (smplx's first, then the releases')."""
    gender = _check_gender(gender)
    letter = {"neutral": "neutral", "male": "m", "female": "f"}[gender]
    return [
        f"SMPL_{gender.upper()}.pkl",
        f"SMPL_{gender.upper()}.npz",
        f"basicModel_{letter}_lbs_10_207_0_v1.0.0.pkl",
        f"basicmodel_{letter}_lbs_10_207_0_v1.1.0.pkl",
        f"basicmodel_{letter}_lbs_10_207_0_v1.0.0.pkl",
    ]


def smplh_file_names(gender: str) -> list[str]:
    """File names an SMPL-H model of ``gender`` is known under (MANO release, smplx, AMASS)."""
    gender = _check_gender(gender)
    return [f"SMPLH_{gender.upper()}.pkl", f"SMPLH_{gender.upper()}.npz", f"{gender}/model.npz"]


def _check_gender(gender: str) -> str:
    if not isinstance(gender, str) or gender.lower() not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    return gender.lower()


def body_model_search_dirs(location: PathLike | None = None) -> list[Path]:
    """Folders searched for body-model files, in order (see the module docstring)."""
    dirs: list[Path] = []
    if location is not None:
        path = Path(location).expanduser()
        dirs.append(path if path.is_dir() or not path.suffix else path.parent)
    variable = os.environ.get(BODY_MODELS_VARIABLE)
    if variable:
        dirs.append(Path(variable).expanduser())
    dirs.append(DEFAULT_BODY_MODELS_DIR.expanduser())
    unique: list[Path] = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def _lookup_ignoring_case(folder: Path, relative: str) -> Path | None:
    current = folder
    for part in Path(relative).parts:
        if not current.is_dir():
            return None
        exact = current / part
        if exact.exists():
            current = exact
            continue
        matches = [child for child in current.iterdir() if child.name.lower() == part.lower()]
        if not matches:
            return None
        current = sorted(matches)[0]
    return current if current.is_file() else None


def find_body_model_file(names: Iterable[str], location: PathLike | None = None) -> Path:
    """First existing file among ``names`` in the search folders.

    Args:
        names: candidate file names (relative paths allowed), most preferred first.
        location: a file (returned as is when it exists) or a folder searched first.

    Raises:
        BodyModelNotFoundError: naming every path searched and where to register for SMPL.
    """
    names = list(names)
    if location is not None:
        path = Path(location).expanduser()
        if path.is_file():
            return path
        if path.suffix and not path.exists():
            raise BodyModelNotFoundError(path.name, [str(path)])
    searched: list[str] = []
    for folder in body_model_search_dirs(location):
        for subdir in _SUBDIRS:
            base = folder / subdir if subdir else folder
            for name in names:
                searched.append(str(base / name))
                found = _lookup_ignoring_case(base, name)
                if found is not None:
                    return found
    raise BodyModelNotFoundError(" or ".join(names[:2]), searched)


def load_joint_regressor(name: str, location: PathLike | None = None) -> np.ndarray:
    """A joint regressor such as ``J_regressor_h36m.npy`` as a dense (J, V) float64 array."""
    path = find_body_model_file([name], location)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        arrays = load_body_model_arrays(path)
        if len(arrays) != 1:
            raise ValueError(f"{path}: expected one array, found keys {sorted(arrays)}")
        array = next(iter(arrays.values()))
    if scipy.sparse.issparse(array):
        array = array.toarray()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{path}: a joint regressor must be 2-D (joints, vertices), got shape {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


class _ChumpyArray:
    """Stands in for ``chumpy.ch.Ch``: keeps the pickled state, whose ``x`` is the array."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self, key: str) -> np.ndarray:
        state = self.state if isinstance(self.state, dict) else {}
        if "x" not in state:
            raise ValueError(f"body-model entry {key!r}: chumpy object without a stored value")
        return np.asarray(state["x"])


class _ChumpyExpression:
    """Stands in for derived chumpy classes, whose value would need chumpy to evaluate."""

    qualified_name = "chumpy"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self, key: str) -> np.ndarray:
        raise ValueError(
            f"body-model entry {key!r} is a chumpy expression ({self.qualified_name}) rather than a "
            "stored array; meshrec cannot evaluate it without chumpy. Re-save the file with plain "
            "numpy arrays (for example with an environment that has chumpy: np.array(value))."
        )


class _SparseMatrix:
    """Stands in for scipy's sparse matrix classes, old (``scipy.sparse.csc``) and new paths."""

    format = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_scipy(self, key: str):
        state = self.state
        shape = tuple(state.get("_shape", state.get("shape", ())))
        if self.format in {"csc", "csr"}:
            cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
            return cls((state["data"], state["indices"], state["indptr"]), shape=shape)
        if "coords" in state:
            rows, cols = state["coords"]
        else:
            rows, cols = state["row"], state["col"]
        return scipy.sparse.coo_matrix((state["data"], (rows, cols)), shape=shape).tocsc()


def _sparse_class(fmt: str) -> type:
    return type(f"_SparseMatrix_{fmt}", (_SparseMatrix,), {"format": fmt})


def _chumpy_expression_class(module: str, name: str) -> type:
    return type(f"_Chumpy_{name}", (_ChumpyExpression,), {"qualified_name": f"{module}.{name}"})


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles of bytes at protocol 2 call _codecs.encode(text, "latin1").
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"pickle asks for the codec {encoding!r}; only latin-1 is admitted")
    return text.encode("latin1")


def _numpy_attribute(modules: tuple[str, ...], name: str) -> Any:
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "object"): object,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _encode_latin1,
        ("chumpy.ch", "Ch"): _ChumpyArray,
    }
    # Python 2 names; the unpickler's own renaming (fix_imports) is bypassed by find_class.
    for name, value in (("set", set), ("frozenset", frozenset), ("object", object)):
        allowed[("__builtin__", name)] = value
    allowed[("copy_reg", "_reconstructor")] = copyreg._reconstructor
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = _numpy_attribute(multiarray, "_reconstruct")
        allowed[(f"{prefix}.multiarray", "scalar")] = _numpy_attribute(multiarray, "scalar")
        allowed[(f"{prefix}.numeric", "_frombuffer")] = _numpy_attribute(numeric, "_frombuffer")
    for fmt in ("csc", "csr", "coo"):
        cls = _sparse_class(fmt)
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(module, f"{fmt}_matrix")] = cls
            allowed[(module, f"{fmt}_array")] = cls
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        if module.split(".")[0] == "chumpy" and name[:1].isupper():
            return _chumpy_expression_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: body-model files contain only numpy arrays, "
            "scipy sparse matrices and chumpy arrays, and this pickle asks for something else "
            "(possibly code to run). Nothing from the file was executed. Use the official files "
            "from https://smpl.is.tue.mpg.de or a file saved with numpy.savez."
        )


def _to_plain(key: str, value: Any) -> Any:
    if isinstance(value, (_ChumpyArray, _ChumpyExpression)):
        return value.to_numpy(key)
    if isinstance(value, _SparseMatrix):
        return value.to_scipy(key)
    return value


def _load_pickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        content = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated or corrupt files raise many different errors
        raise ValueError(f"{path}: not a readable body-model pickle ({type(error).__name__}: {error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a body-model pickle holds a dict of arrays, found {type(content).__name__}")
    return {str(key): _to_plain(str(key), value) for key, value in content.items()}


def _load_npz(path: Path) -> dict[str, Any]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    arrays: dict[str, Any] = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError:
                # Object arrays (pickled inside the npz) are never loaded; no model array is one.
                continue
    return arrays


def load_body_model_arrays(path: PathLike) -> dict[str, Any]:
    """Arrays of a body-model file (``.pkl`` or ``.npz``) as numpy arrays, without chumpy.

    Returns:
        dict from the file's keys (``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor``,
        ``weights``, ``kintree_table``, ``f``, ...) to numpy arrays; sparse matrices stay
        ``scipy.sparse`` matrices; strings and small dicts pass through.

    Raises:
        UnsafePickleError: the pickle asks for anything but array classes (nothing is run).
        ValueError: the file is truncated or not a body-model file.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BodyModelNotFoundError(path.name, [str(path)])
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    if path.suffix.lower() in {".pkl", ".pickle"}:
        return _load_pickle(path)
    raise ValueError(f"{path}: body-model files are .pkl or .npz, got {path.suffix!r}")
