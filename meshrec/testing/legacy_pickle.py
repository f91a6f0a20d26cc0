"""Writes pickles the way Python 2 wrote the official SMPL files.

The official ``.pkl`` files were written by Python 2's pickle (protocol 2) with numpy 1.x,
scipy and chumpy objects inside. Reading them exercises paths a Python 3 pickle never takes:
8-bit strings (``BINSTRING``) holding raw array bytes, globals such as
``numpy.core.multiarray._reconstruct``, ``scipy.sparse.csc.csc_matrix`` and ``chumpy.ch.Ch``, and
``__builtin__.set``. This module emits exactly those opcodes for synthetic data, so that
meshrec's loader is tested against the real format without any licensed file.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np
import scipy.sparse

__all__ = ["ChumpyArray", "dumps_python2"]


class ChumpyArray:
    """Marks an array to be written as a ``chumpy.ch.Ch`` object (as SMPL's ``shapedirs``)."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def op(self, code: bytes) -> None:
        self.out += code

    def global_(self, module: str, name: str) -> None:
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")

    def string(self, data: bytes) -> None:
        # Python 2 str: SHORT_BINSTRING / BINSTRING (Python 3 reads them as str via latin-1).
        if len(data) < 256:
            self.out += pickle.SHORT_BINSTRING + bytes([len(data)]) + data
        else:
            self.out += pickle.BINSTRING + struct.pack("<i", len(data)) + data

    def integer(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += pickle.BININT1 + bytes([value])
        elif -(2**31) <= value < 2**31:
            self.out += pickle.BININT + struct.pack("<i", value)
        else:
            encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += pickle.LONG1 + bytes([len(encoded)]) + encoded

    def tuple_(self, items: tuple) -> None:
        if len(items) == 0:
            self.op(pickle.EMPTY_TUPLE)
            return
        if len(items) > 3:
            self.op(pickle.MARK)
        for item in items:
            self.value(item)
        self.op({1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}.get(len(items), pickle.TUPLE))

    def dtype(self, dtype: np.dtype) -> None:
        _, args, state = dtype.__reduce__()
        self.global_("numpy", "dtype")
        self.tuple_(args)
        self.op(pickle.REDUCE)
        self.tuple_(state)
        self.op(pickle.BUILD)

    def ndarray(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.tuple_((0,))
        self.string(b"b")
        self.op(pickle.TUPLE3)
        self.op(pickle.REDUCE)
        self.op(pickle.MARK)
        self.integer(1)
        self.tuple_(tuple(int(n) for n in array.shape))
        self.dtype(array.dtype)
        self.op(pickle.NEWFALSE)
        self.string(array.tobytes())
        self.op(pickle.TUPLE)
        self.op(pickle.BUILD)

    def new_object(self, module: str, name: str, state: dict) -> None:
        self.global_(module, name)
        self.op(pickle.EMPTY_TUPLE)
        self.op(pickle.NEWOBJ)
        self.value(state)
        self.op(pickle.BUILD)

    def value(self, value: Any) -> None:
        if value is None:
            self.op(pickle.NONE)
        elif isinstance(value, bool):
            self.op(pickle.NEWTRUE if value else pickle.NEWFALSE)
        elif isinstance(value, (int, np.integer)):
            self.integer(int(value))
        elif isinstance(value, (float, np.floating)):
            self.out += pickle.BINFLOAT + struct.pack(">d", float(value))
        elif isinstance(value, str):
            self.string(value.encode("latin1"))
        elif isinstance(value, tuple):
            self.tuple_(value)
        elif isinstance(value, list):
            self.op(pickle.EMPTY_LIST)
            if value:
                self.op(pickle.MARK)
                for item in value:
                    self.value(item)
                self.op(pickle.APPENDS)
        elif isinstance(value, set):
            self.global_("__builtin__", "set")
            self.value(sorted(value))
            self.op(pickle.TUPLE1)
            self.op(pickle.REDUCE)
        elif isinstance(value, dict):
            self.op(pickle.EMPTY_DICT)
            if value:
                self.op(pickle.MARK)
                for key, item in value.items():
                    self.value(key)
                    self.value(item)
                self.op(pickle.SETITEMS)
        elif isinstance(value, ChumpyArray):
            state = {"x": value.array, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                     "_make_dense": False, "_make_sparse": False}
            self.new_object("chumpy.ch", "Ch", state)
        elif scipy.sparse.issparse(value):
            matrix = scipy.sparse.csc_matrix(value)
            matrix.sort_indices()
            state = {"_shape": tuple(int(n) for n in matrix.shape), "maxprint": 50, "indices": matrix.indices,
                     "indptr": matrix.indptr, "data": matrix.data}
            self.new_object("scipy.sparse.csc", "csc_matrix", state)
        elif isinstance(value, np.ndarray):
            self.ndarray(value)
        else:
            raise TypeError(f"cannot write {type(value).__name__} as a Python 2 pickle")


def dumps_python2(content: dict[str, Any]) -> bytes:
    """``content`` as a protocol-2 pickle in the byte layout Python 2 + numpy 1.x produced."""
    writer = _Writer()
    writer.op(pickle.PROTO + bytes([2]))
    writer.value(content)
    writer.op(pickle.STOP)
    return bytes(writer.out)
