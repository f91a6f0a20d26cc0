"""Pictures of triangle meshes seen by a pinhole camera: a small z-buffer rasteriser in numpy.

No OpenGL, no extra dependency. The camera is OpenCV's: camera-frame points in metres (x right,
y down, z forward), intrinsics ``K`` (3, 3), pixel centres at integer coordinates (pixel
``[row, col]`` is the point ``u = col, v = row``).

Usage::

    picture = render_meshes([Mesh(vertices, faces, color=(70, 130, 230))], K, (1280, 720))  # (720, 1280, 3) uint8
    # people over a photo, semi-transparent, one colour each:
    overlay = render_meshes([Mesh(v, faces, rgb, opacity=0.6) for v, rgb in zip(people, colours)], K,
                            (photo.shape[1], photo.shape[0]), background=photo)

Each mesh is rasterised with its own depth buffer (its nearest surface per pixel); the meshes'
layers are then blended per pixel from far to near, each with its opacity. So an opaque mesh
hides whatever lies behind it, whichever order the meshes come in, and a semi-transparent one
(a fit over a photo, a ghost of the ground truth) shows what is behind it but never its own back.

Shading is Lambertian with a light near the camera, above and to the left (``"smooth"``: vertex normals interpolated per
pixel; ``"flat"``: one normal per face), two-sided so that open surfaces and inward-facing
triangles are lit too. Triangles with a corner closer than ``near`` are skipped (no clipping):
fine for objects in front of the camera and for finely tessellated ground planes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Mesh", "Fragments", "rasterize", "render_meshes", "vertex_normals"]

# Triangle rows scanned at once and pixels (fragments) tested at once (bound the rasteriser's
# memory), and the slack of the edge test (barycentric units) so that pixel centres on an edge
# count as inside.
_CHUNK_ROWS = 1 << 16
_CHUNK_FRAGMENTS = 1 << 20
_EDGE_TOLERANCE = 1e-9


@dataclass
class Mesh:
    """One mesh to draw.

    Attributes:
        vertices: (V, 3) camera-frame points, metres.
        faces: (F, 3) vertex indices.
        color: RGB 0-255, one (3,) for the whole mesh or (V, 3) per vertex (interpolated).
        opacity: 0 (invisible) to 1 (opaque).
        face_colors: optional (F, 3) RGB per face; overrides ``color``.
        shading: "smooth" (vertex normals, for bodies) or "flat" (face normals, for boxes).
        outline: optional RGB of the mesh's occluding contours (silhouette, and limbs in front
            of the body), drawn on top of everything, ``outline_width`` pixels wide: shows a
            mesh that others overlap (a ground truth under a close fit).
    """

    vertices: np.ndarray
    faces: np.ndarray
    color: Sequence[float] | np.ndarray = (200, 200, 200)
    opacity: float = 1.0
    face_colors: np.ndarray | None = None
    shading: str = "smooth"
    outline: Sequence[float] | None = None
    outline_width: int = 2


@dataclass
class Fragments:
    """What the rasteriser saw at each pixel of an (H, W) image.

    Attributes:
        depth: (H, W) camera-frame z (metres) of the nearest surface; ``inf`` where empty.
        face: (H, W) index of the face seen; -1 where empty.
        barycentric: (H, W, 3) perspective-correct barycentric coordinates of the pixel centre in
            that face (weights of its three corners); 0 where empty.
    """

    depth: np.ndarray
    face: np.ndarray
    barycentric: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by the mesh."""
        return self.face >= 0


def _as_intrinsics(K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f"K must be a finite (3, 3) intrinsics matrix, got shape {K.shape}")
    return K


def _as_size(image_size) -> tuple[int, int]:
    try:
        width, height = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size!r}")
    return width, height


def _check_mesh(vertices, faces, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{name}: vertices must be (V, 3) camera-frame points, got shape {vertices.shape}")
    if faces.size == 0:
        faces = faces.reshape(0, 3)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name}: faces must be (F, 3) vertex indices, got shape {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"{name}: faces must be integers, got {faces.dtype}")
    faces = faces.astype(np.int64)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"{name}: faces index vertices 0..{len(vertices) - 1}, got {faces.min()}..{faces.max()}")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name}: vertices contain NaN or inf")
    return vertices, faces


def rasterize(vertices, faces, K, image_size, near: float = 1e-3) -> Fragments:
    """Z-buffer rasterisation of one mesh: which face is nearest at each pixel centre, and where.

    Args:
        vertices: (V, 3) camera-frame points, metres (z forward).
        faces: (F, 3) vertex indices.
        K: (3, 3) intrinsics.
        image_size: (width, height) in pixels.
        near: triangles with a corner at z <= near are skipped.

    Returns:
        :class:`Fragments` of shape (height, width). A pixel is covered when its centre lies inside
        the projected triangle or on its edge; depth is interpolated perspective-correctly (1/z is
        linear in the image).
    """
    K = _as_intrinsics(K)
    width, height = _as_size(image_size)
    vertices, faces = _check_mesh(vertices, faces)
    depth = np.full(height * width, np.inf)
    face_id = np.full(height * width, -1, dtype=np.int64)
    out = Fragments(depth.reshape(height, width), face_id.reshape(height, width), np.zeros((height, width, 3)))
    if len(faces) == 0:
        return out

    z = vertices[:, 2]
    safe_z = np.where(z > near, z, 1.0)
    projected = vertices @ K.T
    uv = projected[:, :2] / safe_z[:, None]
    corners = uv[faces]  # (F, 3, 2)
    corner_z = z[faces]
    lo = np.ceil(corners.min(axis=1)).clip(0, [width, height])  # first pixel centre inside the bbox
    hi = np.floor(corners.max(axis=1)).clip(-1, [width - 1, height - 1])
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = (corner_z > near).all(axis=1) & (hi >= lo).all(axis=1) & (np.abs(area) > 1e-12)
    ids = np.flatnonzero(keep)
    if len(ids) == 0:
        return out
    # Barycentric coordinates are affine in the pixel (u, v): lambda_i = plane[i] . (u, v, 1), and
    # so is 1/z = sum_i lambda_i / z_i (perspective-correct depth).
    planes = np.zeros((len(faces), 3, 3))
    for i, (s, t) in enumerate(((b, c), (c, a), (a, b))):  # the edge opposite corner i
        planes[:, i, 0] = -(t[:, 1] - s[:, 1])
        planes[:, i, 1] = t[:, 0] - s[:, 0]
        planes[:, i, 2] = (t[:, 1] - s[:, 1]) * s[:, 0] - (t[:, 0] - s[:, 0]) * s[:, 1]
    planes[ids] /= area[ids, None, None]
    inverse_depth = np.einsum("fic,fi->fc", planes, 1.0 / np.where(keep[:, None], corner_z, 1.0))

    lo, hi = lo[ids].astype(np.int64), hi[ids].astype(np.int64)
    # Chunks of triangles with similar bbox heights; each chunk scans its triangles row by row.
    rows = hi[:, 1] - lo[:, 1] + 1
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    start = 0
    while start < len(order):
        # The largest chunk whose count x rows fits the budget (rows are sorted, the last is the largest).
        cost = np.arange(1, len(order) - start + 1) * rows[start:]
        stop = start + max(1, int(np.searchsorted(cost, _CHUNK_ROWS, side="right")))
        chunk = order[start:stop]
        start = stop
        _rasterize_chunk(ids[chunk], lo[chunk], hi[chunk], int(rows[stop - 1]), planes, inverse_depth, width,
                         depth, face_id)

    pixels = np.flatnonzero(face_id >= 0)
    if len(pixels):
        f = face_id[pixels]
        p = np.stack([pixels % width, pixels // width, np.ones_like(pixels)], axis=1).astype(np.float64)
        weights = np.einsum("nic,nc->ni", planes[f], p) / corner_z[f]
        weights /= weights.sum(axis=1, keepdims=True)
        out.barycentric.reshape(-1, 3)[pixels] = weights
    return out


def _rasterize_chunk(ids, lo, hi, row_count, planes, inverse_depth, width, depth, face_id) -> None:
    """Scanline rasterisation of triangles ``ids`` (bbox ``lo``..``hi`` in pixels, inclusive): per
    bbox row, the span of pixel centres inside all three edges; fragments that pass the depth
    test go into the flat ``depth`` / ``face_id`` buffers."""
    plane = planes[ids]  # (n, 3 edges, 3 coefficients)
    y = (lo[:, 1:2] + np.arange(row_count)[None]).astype(np.float64)  # (n, rows)
    valid = y <= hi[:, 1:2]
    left = np.broadcast_to(lo[:, 0:1].astype(np.float64), y.shape)
    right = np.broadcast_to(hi[:, 0:1].astype(np.float64), y.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):  # edge i: slope * x + rest >= 0
            slope, rest = plane[:, i, 0:1], plane[:, i, 1:2] * y + plane[:, i, 2:3]
            bound = -rest / slope
            left = np.where(slope > 0, np.maximum(left, bound), left)
            right = np.where(slope < 0, np.minimum(right, bound), right)
            valid &= (slope != 0) | (rest >= -_EDGE_TOLERANCE)
    # One pixel of slack each side against rounding; the exact edge test below decides.
    first = np.maximum(np.ceil(left) - 1, lo[:, 0:1])
    last = np.minimum(np.floor(right) + 1, hi[:, 0:1])
    valid &= last >= first
    count = np.where(valid, last - first + 1, 0).astype(np.int64).ravel()
    first, y = first.ravel(), y.ravel()
    # Spans in batches of about _CHUNK_FRAGMENTS pixels (many large overlapping triangles would
    # otherwise make one huge batch).
    starts = np.cumsum(count) - count
    cuts = np.searchsorted(starts, np.arange(0, int(count.sum()), _CHUNK_FRAGMENTS), side="right") - 1
    for begin, end in zip(cuts, [*cuts[1:], len(count)]):
        spans = count[begin:end]
        total = int(spans.sum())
        if total == 0:
            continue
        segment = np.repeat(np.arange(begin, end), spans)
        offset = np.arange(total) - np.repeat(np.cumsum(spans) - spans, spans)
        u = first[segment] + offset
        v = y[segment]
        local = segment // row_count
        inside = np.ones(total, dtype=bool)
        for i in range(3):  # the pixel centre is inside the triangle or on an edge
            inside &= plane[local, i, 0] * u + plane[local, i, 1] * v + plane[local, i, 2] >= -_EDGE_TOLERANCE
        u, v, tri = u[inside], v[inside], ids[local[inside]]
        coefficients = inverse_depth[tri]
        z = 1.0 / (coefficients[:, 0] * u + coefficients[:, 1] * v + coefficients[:, 2])
        pixel = v.astype(np.int64) * width + u.astype(np.int64)
        # Depth test: the nearest fragment per pixel wins (ties: any one of them).
        np.minimum.at(depth, pixel, z)
        won = z == depth[pixel]
        face_id[pixel[won]] = tri[won]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals: area-weighted sums of the normals of the faces around each vertex."""
    vertices, faces = _check_mesh(vertices, faces)
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # length = 2 area
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)


def _colors(mesh: Mesh, vertices: np.ndarray, faces: np.ndarray, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(per-face (F, 3) or None, per-vertex (V, 3) or None) colours, 0-255 floats."""
    if mesh.face_colors is not None:
        face_colors = np.asarray(mesh.face_colors, dtype=np.float64)
        if face_colors.shape != (len(faces), 3):
            raise ValueError(f"{name}: face_colors must be (F, 3) = ({len(faces)}, 3), got {face_colors.shape}")
        return face_colors, None
    color = np.asarray(mesh.color, dtype=np.float64)
    if color.shape == (3,):
        return np.broadcast_to(color, (len(faces), 3)), None
    if color.shape == (len(vertices), 3):
        return None, color
    raise ValueError(f"{name}: color must be RGB (3,) or per vertex (V, 3) = ({len(vertices)}, 3), got {color.shape}")


def _shade_layer(mesh: Mesh, K, size, light: np.ndarray, ambient: float, name: str):
    vertices, faces = _check_mesh(mesh.vertices, mesh.faces, name)
    if mesh.shading not in ("smooth", "flat"):
        raise ValueError(f"{name}: shading must be 'smooth' or 'flat', got {mesh.shading!r}")
    face_colors, vertex_colors = _colors(mesh, vertices, faces, name)
    fragments = rasterize(vertices, faces, K, size)
    pixels = np.flatnonzero(fragments.mask)
    rgb = np.zeros((len(pixels), 3))
    if len(pixels):
        f = fragments.face.reshape(-1)[pixels]
        weights = fragments.barycentric.reshape(-1, 3)[pixels]
        if mesh.shading == "smooth":
            normals = (vertex_normals(vertices, faces)[faces[f]] * weights[..., None]).sum(axis=1)
        else:
            corners = vertices[faces[f]]
            normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
        shade = ambient + (1 - ambient) * np.abs(normals @ light)
        base = face_colors[f] if face_colors is not None else (vertex_colors[faces[f]] * weights[..., None]).sum(axis=1)
        rgb = base * shade[:, None]
    return fragments.depth, pixels, rgb


def render_meshes(meshes: Sequence[Mesh | tuple], K, image_size, background=None,
                  light: Sequence[float] = (-0.3, -0.6, -1.0), ambient: float = 0.3) -> np.ndarray:
    """Draws meshes seen by a pinhole camera, with a z-buffer, over a background.

    Args:
        meshes: :class:`Mesh` objects or tuples ``(vertices (V, 3), faces (F, 3), rgb, opacity)``
            (opacity optional), camera frame, metres.
        K: (3, 3) intrinsics.
        image_size: (width, height) in pixels.
        background: None (white), an RGB triple, or an (H, W, 3) image (uint8 0-255, e.g. the
            photo to draw over).
        light: direction from the surfaces towards the light, camera frame (default: from the
            camera, a little above and to the left).
        ambient: the brightness of surfaces turned away from the light, 0-1.

    Returns:
        (H, W, 3) uint8 picture.
    """
    K = _as_intrinsics(K)
    width, height = _as_size(image_size)
    if background is None:
        background = (255, 255, 255)
    background = np.asarray(background, dtype=np.float64)
    if background.shape == (3,):
        picture = np.broadcast_to(background, (height, width, 3)).copy()
    elif background.shape == (height, width, 3):
        picture = background.copy()
    else:
        raise ValueError(f"background must be None, RGB (3,) or an image (H, W, 3) = ({height}, {width}, 3), "
                         f"got shape {background.shape}")
    light = np.asarray(light, dtype=np.float64)
    if light.shape != (3,) or not np.linalg.norm(light) > 0:
        raise ValueError(f"light must be a non-zero direction (3,), got {light!r}")
    light = light / np.linalg.norm(light)

    depths, colors, alphas, outlines = [], [], [], []
    for index, mesh in enumerate(meshes):
        name = f"meshes[{index}]"
        if not isinstance(mesh, Mesh):
            if not isinstance(mesh, (tuple, list)) or len(mesh) not in (3, 4):
                raise ValueError(f"{name}: expected a Mesh or a tuple (vertices, faces, rgb[, opacity])")
            mesh = Mesh(*mesh)
        if not 0 <= float(mesh.opacity) <= 1:
            raise ValueError(f"{name}: opacity must be in [0, 1], got {mesh.opacity}")
        depth, pixels, rgb = _shade_layer(mesh, K, (width, height), light, ambient, name)
        layer = np.zeros((height * width, 3), dtype=np.float32)
        layer[pixels] = rgb
        depths.append(depth.reshape(-1))
        colors.append(layer)
        alphas.append(float(mesh.opacity))
        if mesh.outline is not None:
            outlines.append((_contours(depth, mesh.outline_width), np.asarray(mesh.outline, dtype=np.float64)))
    flat = picture.reshape(-1, 3)
    if depths:
        # Per pixel, blend the layers from far to near ("over" operator); only pixels some layer
        # covers take part, and a layer absent at a pixel (depth inf) sorts first with alpha 0.
        depth = np.stack(depths)  # (L, H*W)
        covered = np.flatnonzero(np.isfinite(depth).any(axis=0))
        depth = depth[:, covered]
        order = np.argsort(-depth, axis=0, kind="stable")
        alpha = np.asarray(alphas)
        columns = np.arange(len(covered))
        blended = flat[covered]
        for rank in range(len(depths)):
            layer = order[rank]
            a = np.where(np.isfinite(depth[layer, columns]), alpha[layer], 0.0)[:, None]
            color = np.empty((len(covered), 3))
            for index in range(len(depths)):  # gather per layer: cheaper than one fancy index
                pick = layer == index
                color[pick] = colors[index][covered[pick]]
            blended = blended * (1 - a) + color * a
        flat[covered] = blended
    for edge, color in outlines:  # contours go on top of everything
        flat[edge.reshape(-1)] = color
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _contours(depth: np.ndarray, width: int, depth_jump: float = 0.05) -> np.ndarray:
    """(H, W) bool: a mesh's occluding contours, ``width`` pixels wide: covered pixels next to an
    uncovered one (the silhouette) or to one more than ``depth_jump`` metres farther (a limb in
    front of the body)."""
    finite = np.isfinite(depth)
    padded = np.pad(np.where(finite, depth, 1e9), 1, mode="edge")  # the image border is no contour
    centre = padded[1:-1, 1:-1]
    edge = np.zeros_like(finite)
    for neighbour in (padded[2:, 1:-1], padded[:-2, 1:-1], padded[1:-1, 2:], padded[1:-1, :-2]):
        edge |= finite & (neighbour - centre > depth_jump)
    for _ in range(max(width, 1) - 1):  # thicken by one pixel each round
        padded = np.pad(edge, 1)
        edge = edge | padded[2:, 1:-1] | padded[:-2, 1:-1] | padded[1:-1, 2:] | padded[1:-1, :-2]
    return edge
