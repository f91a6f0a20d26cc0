"""Finding and reading body-model files (SMPL, SMPL-H, kid template, joint regressors).

The official SMPL ``.pkl`` files were pickled under Python 2 and contain chumpy objects and scipy
sparse matrices. They are read here without chumpy, through meshrec's restricted unpickler
(:mod:`meshrec.io.safe_pickle`), which admits only array data: anything else in a pickle (a
function to call, a module attribute) is refused before it can run.

Search order for a file: the ``location`` argument (a file, or a folder), then the folder in the
``MESHREC_BODY_MODELS`` environment variable, then ``~/.cache/meshrec/body_models``. In each
folder the file is looked up directly and in the ``smpl/``, ``smplh/`` sub-folders smplx users
keep, ignoring case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import scipy.sparse

from meshrec.errors import BodyModelNotFoundError, UnsafePickleError
from meshrec.io.safe_pickle import load_npz, restricted_load, to_plain

__all__ = [
    "BODY_MODELS_VARIABLE",
    "GENDERS",
    "body_model_search_dirs",
    "check_finite_arrays",
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


def gender_of_file(path: PathLike) -> str | None:
    """The gender a body-model file's name says (``SMPL_MALE.pkl``, ``basicModel_f_lbs_...``,
    ``male/model.npz``), or None when the name does not say."""
    path = Path(path)
    named = {gender for gender in GENDERS
             for candidate in smpl_file_names(gender) + smplh_file_names(gender)
             if path.name.lower() == Path(candidate).name.lower()
             and (not Path(candidate).parent.name or path.parent.name.lower() == Path(candidate).parent.name)}
    return named.pop() if len(named) == 1 else None


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
    """A joint regressor such as ``J_regressor_h36m.npy`` as a dense (J, V) float64 array.

    ``name`` is a file name searched like the body models, or the path of an existing file."""
    given = Path(name).expanduser()
    path = given if given.is_file() else find_body_model_file([name], location)
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
    check_finite_arrays(path, {path.stem: array})
    return array


def check_finite_arrays(path: PathLike, arrays: dict[str, Any]) -> None:
    """Raises ValueError naming the file and the key of the first floating array (dense, or a
    scipy sparse matrix's stored values) holding NaN or infinity: a model file never does, and
    NaN vertices would flow silently into every result."""
    for key, value in arrays.items():
        data = value.data if scipy.sparse.issparse(value) else value
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "fc":
            continue
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise ValueError(f"{path}: array {key!r} holds {bad} NaN or infinite values (of {data.size}); the file is "
                             "corrupt: download the body model again")


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        content = restricted_load(path.read_bytes(), source=str(path))
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated or corrupt files raise many different errors
        raise ValueError(f"{path}: not a readable body-model pickle ({type(error).__name__}: {error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a body-model pickle holds a dict of arrays, found {type(content).__name__}")
    return {str(key): to_plain(str(key), value) for key, value in content.items()}


def _load_npz(path: Path) -> dict[str, Any]:
    # Object arrays (pickled inside the npz) are skipped: no model array is one.
    return load_npz(path, allow_objects=False)


def load_body_model_arrays(path: PathLike) -> dict[str, Any]:
    """Arrays of a body-model file (``.pkl`` or ``.npz``) as numpy arrays, without chumpy.

    Returns:
        dict from the file's keys (``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor``,
        ``weights``, ``kintree_table``, ``f``, ...) to numpy arrays; sparse matrices stay
        ``scipy.sparse`` matrices; strings and small dicts pass through.

    Raises:
        UnsafePickleError: the pickle asks for anything but array classes (nothing is run).
        ValueError: the file is truncated or not a body-model file, or an array holds NaN or
            infinite values (the message names the file and the key).
        ResourceLimitError: the file describes arrays far larger than any body model's (see
            :mod:`meshrec.io.safe_pickle`; nothing large is built).
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BodyModelNotFoundError(path.name, [str(path)])
    if path.suffix.lower() == ".npz":
        arrays = _load_npz(path)
    elif path.suffix.lower() in {".pkl", ".pickle"}:
        arrays = _load_pickle(path)
    else:
        raise ValueError(f"{path}: body-model files are .pkl or .npz, got {path.suffix!r}")
    check_finite_arrays(path, arrays)
    return arrays
