"""Unpickling restricted to array data, for files meshrec reads but did not write.

Body-model ``.pkl`` files (Python 2 pickles with chumpy and scipy objects) and the object
arrays inside dataset ``.npz`` files (mmhuman3d's HumanData) are pickles. Unpickling runs
whatever a file asks for, so meshrec never uses the plain unpickler on them: this one admits
only the numpy, scipy-sparse and chumpy array classes and plain containers, and refuses anything
else (a function to call, a module attribute) before it can run. chumpy and scipy sparse objects
are read as stand-ins and converted to numpy / scipy arrays afterwards (``to_plain``).
"""

from __future__ import annotations

import ast
import codecs
import copyreg
import importlib
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse

from meshrec.errors import UnsafePickleError

__all__ = ["load_npz", "restricted_load", "to_plain"]


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
            f"refusing to unpickle {module}.{name}: meshrec reads only numpy arrays, scipy sparse "
            "matrices, chumpy arrays and plain containers from pickles, and this one asks for something else "
            "(possibly code to run). Nothing from the file was executed."
        )


def to_plain(key: str, value: Any) -> Any:
    """Converts the chumpy / scipy stand-ins in an unpickled value to numpy / scipy arrays."""
    if isinstance(value, (_ChumpyArray, _ChumpyExpression)):
        return value.to_numpy(key)
    if isinstance(value, _SparseMatrix):
        return value.to_scipy(key)
    return value


def restricted_load(stream: BinaryIO | bytes, encoding: str = "latin1") -> Any:
    """Unpickles ``stream`` admitting only array data (see the module docstring).

    Raises:
        UnsafePickleError: the pickle asks for anything else; nothing has run.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    return _RestrictedUnpickler(stream, encoding=encoding).load()


def load_npz(path: Path, allow_objects: bool = True) -> dict[str, Any]:
    """The arrays of an ``.npz`` file. Object arrays (pickled inside the archive, as HumanData
    stores dicts and lists) go through :func:`restricted_load` when ``allow_objects``, and are
    skipped otherwise. A 0-d object array is returned as the object it holds.

    Raises:
        ValueError: the file is not a readable npz archive.
        UnsafePickleError: an object array asks for more than array data.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    arrays: dict[str, Any] = {}
    with archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            key = member[: -len(".npy")]
            data = archive.read(member)
            try:
                header = _npy_header(data)
                if not header["object"]:
                    arrays[key] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
                    continue
            except ValueError as error:
                raise ValueError(f"{path}: member {key!r} is not a valid .npy array ({error})") from error
            if not allow_objects:
                continue
            value = to_plain(key, restricted_load(data[header["data_offset"] :]))
            if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
                value = value.item()
            arrays[key] = value
    return arrays


def _npy_header(data: bytes) -> dict[str, Any]:
    """Where an .npy member's data starts and whether it holds Python objects (a pickle)."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("missing .npy magic")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unknown .npy format version {major}")
    fields = ast.literal_eval(data[start : start + length].decode("utf8" if major == 3 else "latin1"))
    return {"object": "O" in str(fields["descr"]), "data_offset": start + length}
