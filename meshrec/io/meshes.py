"""Mesh and point-cloud writers (PLY binary, OBJ text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["write_obj", "write_ply"]


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
    with open(path, "wb") as handle:
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
    path.write_text("\n".join(lines) + "\n")
    return path
