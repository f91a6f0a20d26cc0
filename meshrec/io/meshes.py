"""Mesh and point-cloud files: PLY (binary writer; binary and ASCII point reader), OBJ text.

Writers are atomic: they write a temporary file beside the target and rename it, so an
interrupted run never leaves a half-written mesh under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = ["atomic_path", "read_ply_points", "write_obj", "write_ply"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it to ``path`` when the block succeeds
    and removes it when the block fails."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4",
              "float": "f4", "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
              "int32": "i4", "uint32": "u4", "float32": "f4", "float64": "f8"}


def read_ply_points(path: str | Path) -> np.ndarray:
    """The (N, 3) float64 vertex positions (x, y, z) of a PLY file, ASCII or binary (faces, if
    any, are ignored): a scene's point cloud or a mesh's vertices."""
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file (no 'ply' magic line)")
        fmt, count, props, in_vertex = None, None, [], False
        while True:
            line = handle.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                in_vertex = words[1] == "vertex"
                if in_vertex:
                    count = int(words[2])
            elif words[0] == "property" and in_vertex:
                if words[1] == "list" or words[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unsupported vertex property {' '.join(words[1:])!r}")
                props.append((words[2], _PLY_TYPES[words[1]]))
        names = [name for name, _ in props]
        if count is None or not {"x", "y", "z"} <= set(names):
            raise ValueError(f"{path}: PLY without vertex x, y, z")
        if fmt == "ascii":
            rows = np.loadtxt(handle, dtype=np.float64, max_rows=count, ndmin=2)
            if rows.shape != (count, len(props)):
                raise ValueError(f"{path}: expected {count} vertex rows of {len(props)} values, got {rows.shape}")
            columns = {name: rows[:, i] for i, name in enumerate(names)}
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, order + kind) for name, kind in props])
            data = handle.read(dtype.itemsize * count)
            if len(data) != dtype.itemsize * count:
                raise ValueError(f"{path}: truncated PLY ({len(data)} of {dtype.itemsize * count} vertex bytes)")
            records = np.frombuffer(data, dtype=dtype, count=count)
            columns = {name: records[name] for name in names}
        else:
            raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return np.stack([columns["x"], columns["y"], columns["z"]], axis=1).astype(np.float64)


def _as_numpy(array, name: str, width: int) -> np.ndarray:
    if torch.is_tensor(array):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {array.shape}")
    return array


def write_ply(path: str | Path, vertices, faces=None, colors=None) -> Path:
    """Writes a binary little-endian PLY: vertices (N, 3) metres, optional faces (F, 3) and
    per-vertex colours (N, 3) uint8. Without faces it is a point cloud."""
    path = Path(path)
    vertices = _as_numpy(vertices, "vertices", 3).astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
    vertex_dtype = [("xyz", "<f4", 3)]
    if colors is not None:
        colors = _as_numpy(colors, "colors", 3).astype(np.uint8)
        if len(colors) != len(vertices):
            raise ValueError(f"colors has {len(colors)} rows for {len(vertices)} vertices")
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vertex_dtype.append(("rgb", "u1", 3))
    if faces is not None:
        faces = _as_numpy(faces, "faces", 3).astype("<i4")
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    records = np.empty(len(vertices), dtype=vertex_dtype)
    records["xyz"] = vertices
    if colors is not None:
        records["rgb"] = colors
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(records.tobytes())
        if faces is not None:
            face_records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", 3)])
            face_records["n"] = 3
            face_records["v"] = faces
            handle.write(face_records.tobytes())
    return path


def write_obj(path: str | Path, vertices, faces=None) -> Path:
    """Writes a Wavefront OBJ: vertices (N, 3), optional triangles (F, 3) (0-based input)."""
    path = Path(path)
    vertices = _as_numpy(vertices, "vertices", 3)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if faces is not None:
        faces = _as_numpy(faces, "faces", 3).astype(np.int64) + 1
        lines += [f"f {a} {b} {c}" for a, b, c in faces]
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(lines) + "\n")
    return path
