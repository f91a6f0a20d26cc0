"""Unpickling restricted to array data, for files meshrec reads but did not write.

Body-model ``.pkl`` files (Python 2 pickles with chumpy and scipy objects) and the object
arrays inside dataset ``.npz`` files (mmhuman3d's HumanData) are pickles. Unpickling runs
whatever a file asks for, so meshrec never uses the plain unpickler on them: this one admits
only the numpy, scipy-sparse and chumpy array classes and plain containers, and refuses anything
else (a function to call, a module attribute) before it can run. chumpy and scipy sparse objects
are read as stand-ins and converted to numpy / scipy arrays afterwards (``to_plain``).

Loading is also bounded, because a small file can describe a huge object: a few hundred bytes of
pickle with memo references make a nested list of 10^9 floats that only explodes when converted
to an array, and a 1 MB zip member can inflate to gigabytes. Every array is bounded by its
declared size and everything a file builds by its expanded size (shared references counted each
time they occur, as a conversion to arrays would copy them), both against ``max_bytes``: by
default 2 GiB, far above SMPL-X's largest array (posedirs, 122 MB in float64), overridable with
the ``MESHREC_MAX_ARRAY_BYTES`` environment variable. Refusals raise :class:`ResourceLimitError`
before the memory is spent.
"""

from __future__ import annotations

import ast
import codecs
import copyreg
import importlib
import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Collection

import numpy as np
import scipy.sparse

from meshrec.errors import UnsafePickleError

__all__ = ["MAX_BYTES_VARIABLE", "ResourceLimitError", "expanded_size", "load_npz", "max_bytes", "npz_keys",
           "restricted_load", "to_plain"]

MAX_BYTES_VARIABLE = "MESHREC_MAX_ARRAY_BYTES"
DEFAULT_MAX_BYTES = 2 << 30


class ResourceLimitError(UnsafePickleError, ValueError):
    """A file describes more data than meshrec agrees to build (see the module docstring)."""


def max_bytes(limit: int | None = None) -> int:
    """The size limit in bytes: ``limit`` if given, else ``MESHREC_MAX_ARRAY_BYTES``, else 2 GiB."""
    if limit is not None:
        return int(limit)
    value = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        parsed = int(float(value))
    except ValueError:
        raise ValueError(f"{MAX_BYTES_VARIABLE}={value!r} is not a number of bytes") from None
    if parsed <= 0:
        raise ValueError(f"{MAX_BYTES_VARIABLE}={value!r} must be positive")
    return parsed


def _too_large(source: str, what: str, size: int, limit: int) -> ResourceLimitError:
    # expanded_size stops counting just above the limit: then only "more than" is known.
    shown = f"more than {limit / 2**30:.2f} GiB" if size == limit + 1 else f"{size / 2**30:.2f} GiB"
    return ResourceLimitError(
        f"{source}: {what} would take {shown} (limit {limit / 2**30:.2f} GiB); refusing to build it. A body model "
        f"or annotation file is far smaller: the file is corrupt or malicious. If it is genuine, raise the limit "
        f"with the environment variable {MAX_BYTES_VARIABLE}=BYTES."
    )


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


def _bounded_reconstruct(reconstruct: Any) -> Any:
    """numpy's ``_reconstruct(cls, shape, dtype)`` allocates ``shape`` at once: check it first."""

    def bounded(cls: Any, shape: Any, dtype: Any) -> Any:
        try:
            count = math.prod(int(n) for n in shape) if isinstance(shape, (tuple, list)) else int(shape)
            itemsize = np.dtype(dtype).itemsize
        except (TypeError, ValueError) as error:
            raise UnsafePickleError(f"pickle asks numpy for an array of shape {shape!r}, dtype {dtype!r}: {error}") from None
        if count * max(itemsize, 1) > max_bytes():
            raise _too_large("pickle", f"an array of shape {tuple(shape) if isinstance(shape, (tuple, list)) else shape}",
                             count * max(itemsize, 1), max_bytes())
        return reconstruct(cls, shape, dtype)

    return bounded


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
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = _bounded_reconstruct(
            _numpy_attribute(multiarray, "_reconstruct"))
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


def expanded_size(value: Any, limit: int | None = None) -> int:
    """The bytes ``value`` would take with every shared reference copied (as converting nested
    lists to an array does): numeric arrays by ``nbytes``, strings by length, other scalars 8
    bytes, containers 8 bytes per entry plus their entries. Linear in the distinct objects
    (memoised by identity, iterative: any nesting depth); a reference back to an enclosing
    container counts once. Saturates just above ``limit`` when given.
    """
    cap = None if limit is None else int(limit) + 1
    sizes: dict[int, int] = {}
    open_containers: set[int] = set()
    alive: list[Any] = []  # ids stay unique while the objects live
    stack: list[tuple[Any, list[Any] | None]] = [(value, None)]
    while stack:
        obj, children = stack.pop()
        key = id(obj)
        if children is not None:  # every child is sized: close the container
            total = 8 * len(children)
            for child in children:
                total += sizes.get(id(child), 0)
                if cap is not None and total >= cap:
                    total = cap
                    break
            sizes[key] = total
            open_containers.discard(key)
            continue
        if key in sizes or key in open_containers:
            continue
        kids = _children(obj)
        if kids is None:
            sizes[key] = _leaf_size(obj)
            continue
        alive.append(obj)
        open_containers.add(key)
        stack.append((obj, kids))
        stack.extend((child, None) for child in kids)
    return sizes[id(value)]


def _children(obj: Any) -> list[Any] | None:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return list(obj.flat)
    if isinstance(obj, (_ChumpyArray, _ChumpyExpression, _SparseMatrix)):
        return [getattr(obj, "state", None)]
    return None


def _leaf_size(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (str, bytes, bytearray)):
        return len(obj)
    return 8


def restricted_load(stream: BinaryIO | bytes, encoding: str = "latin1", limit: int | None = None,
                    source: str = "pickle") -> Any:
    """Unpickles ``stream`` admitting only array data (see the module docstring), and at most
    ``limit`` bytes of it once expanded (default :func:`max_bytes`). ``source`` names the file
    in messages.

    Raises:
        UnsafePickleError: the pickle asks for anything else; nothing has run.
        ResourceLimitError: it describes more than ``limit`` bytes (nothing large was built).
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    limit = max_bytes(limit)
    try:
        value = _RestrictedUnpickler(stream, encoding=encoding).load()
    except ResourceLimitError as error:
        raise ResourceLimitError(str(error).replace("pickle:", f"{source}:", 1)) from None
    size = expanded_size(value, limit)
    if size > limit:
        raise _too_large(source, "its content, with shared references expanded,", size, limit)
    return value


def npz_keys(path: Path) -> list[str]:
    """The array names of an ``.npz`` file, from the zip directory (no member is decompressed).

    Raises:
        ValueError: the file is not a readable npz archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error


def load_npz(path: Path, allow_objects: bool = True, keys: Collection[str] | None = None,
             required: Collection[str] = (), limit: int | None = None) -> dict[str, Any]:
    """The arrays of an ``.npz`` file. Object arrays (pickled inside the archive, as HumanData
    stores dicts and lists) go through :func:`restricted_load` when ``allow_objects``, and are
    skipped otherwise. A 0-d object array is returned as the object it holds.

    Args:
        keys: read only these members (None: all); the others are never decompressed.
        required: keys that must be present; checked from the archive's directory before any
            member is read.
        limit: the most bytes one member may declare or expand to, and all members together
            (default :func:`max_bytes`).

    Raises:
        ValueError: the file is not a readable npz archive, or a required key is missing.
        UnsafePickleError: an object array asks for more than array data.
        ResourceLimitError: a member declares (or its pickle expands to) more than ``limit``
            bytes; checked from the .npy header before the member is decompressed.
    """
    limit = max_bytes(limit)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from error
    arrays: dict[str, Any] = {}
    with archive:
        members = {info.filename[: -len(".npy")]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        missing = [key for key in required if key not in members]
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)} (found {sorted(members)})")
        total = 0
        for key, info in members.items():
            if keys is not None and key not in keys:
                continue
            source = f"{path} (key {key!r})"
            # The zip directory's declared size bounds what decompression yields (zipfile stops
            # there and checks the CRC); the .npy header's shape bounds the array.
            if info.file_size > limit + 65536:
                raise _too_large(str(path), f"member {key!r} ({info.file_size} bytes uncompressed)", info.file_size,
                                 limit)
            try:
                with archive.open(info) as handle:
                    head = handle.read(65536)
                    header = _npy_header(head)
                    if not header["object"]:
                        declared = header["nbytes"]
                        if declared > limit or total + declared > limit * 4:
                            raise _too_large(str(path), f"array {key!r} of shape {header['shape']}", declared, limit)
                        data = head + handle.read(max(0, header["data_offset"] + declared - len(head)))
                        arrays[key] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
                        total += declared
                        continue
                    if not allow_objects:
                        continue
                    data = head + handle.read()
            except (ValueError, TypeError, SyntaxError, zipfile.BadZipFile, EOFError, OSError) as error:
                if isinstance(error, ResourceLimitError):
                    raise
                raise ValueError(f"{path}: member {key!r} is not a valid .npy array ({error})") from error
            value = to_plain(key, restricted_load(data[header["data_offset"] :], limit=limit, source=source))
            if isinstance(value, np.ndarray) and value.shape == () and value.dtype == object:
                value = value.item()
            arrays[key] = value
    return arrays


def _npy_header(data: bytes) -> dict[str, Any]:
    """An .npy member's header: where its data starts, whether it holds Python objects (a
    pickle), and its declared shape and data size."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("missing .npy magic")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unknown .npy format version {major}")
    if start + length > len(data):
        raise ValueError("truncated .npy header")
    fields = ast.literal_eval(data[start : start + length].decode("utf8" if major == 3 else "latin1"))
    if not isinstance(fields, dict) or not {"descr", "shape"} <= set(fields):
        raise ValueError("malformed .npy header")
    shape = fields["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"malformed .npy shape {shape!r}")
    is_object = "O" in str(fields["descr"])
    itemsize = 8 if is_object else np.dtype(np.lib.format.descr_to_dtype(fields["descr"])).itemsize
    return {"object": is_object, "data_offset": start + length, "shape": shape,
            "nbytes": math.prod(shape) * itemsize}
