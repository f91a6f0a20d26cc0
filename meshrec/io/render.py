"""Pictures of meshes and point clouds with Pillow: flat-shaded triangles drawn far to near.

Good enough to look at a fit (no z-buffer, so interpenetrating triangles may sort imperfectly);
no OpenGL, no extra dependency. Layers are composited in order, each with its own opacity, so a
fitted mesh can be laid semi-transparently over the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["MeshLayer", "PointLayer", "View", "orthographic_view", "perspective_view", "render"]

Projection = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class View:
    """Maps points (N, 3) to pixels (N, 2) and a depth (N,) that grows away from the viewer,
    and says which way the light comes from (a unit vector in the points' frame)."""

    project: Projection
    size: tuple[int, int]  # width, height
    light: np.ndarray
    clip_behind: bool = False  # drop triangles with a corner at depth <= 0 (perspective views)


@dataclass
class MeshLayer:
    vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    color: tuple[int, int, int]
    opacity: float = 1.0


@dataclass
class PointLayer:
    points: np.ndarray  # (N, 3)
    color: tuple[int, int, int]
    radius: float = 1.0
    opacity: float = 1.0


def perspective_view(intrinsics: np.ndarray, size: tuple[int, int]) -> View:
    """The camera's own view: pinhole projection with K (3, 3), camera frame points."""
    intrinsics = np.asarray(intrinsics, dtype=np.float64)

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        depth = points[:, 2]
        safe = np.where(depth > 1e-6, depth, 1e-6)
        pixels = (points @ intrinsics.T)[:, :2] / safe[:, None]
        return pixels, depth

    return View(project, size, light=np.array([0.0, 0.0, -1.0]), clip_behind=True)


def orthographic_view(right: np.ndarray, down: np.ndarray, centre: np.ndarray, pixels_per_metre: float,
                      size: tuple[int, int]) -> View:
    """A parallel projection onto the plane spanned by ``right`` and ``down`` (unit vectors),
    looking along ``right x down``; ``centre`` lands in the middle of the picture."""
    right, down = np.asarray(right, dtype=np.float64), np.asarray(down, dtype=np.float64)
    forward = np.cross(right, down)
    centre = np.asarray(centre, dtype=np.float64)

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset = points - centre
        pixels = np.stack([offset @ right, offset @ down], axis=1) * pixels_per_metre
        return pixels + np.array(size, dtype=np.float64) / 2, offset @ forward

    return View(project, size, light=-forward)


def _draw_mesh(view: View, layer: MeshLayer) -> Image.Image:
    canvas = Image.new("RGBA", view.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    pixels, depth = view.project(np.asarray(layer.vertices, dtype=np.float64))
    faces = np.asarray(layer.faces, dtype=np.int64)
    corners = np.asarray(layer.vertices, dtype=np.float64)[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    shade = 0.35 + 0.65 * np.abs(normals @ view.light)
    order = np.argsort(-depth[faces].mean(axis=1))  # far first
    visible = (depth[faces] > 0).all(axis=1) if view.clip_behind else np.ones(len(faces), dtype=bool)
    alpha = int(round(255 * layer.opacity))
    color = np.asarray(layer.color, dtype=np.float64)
    for face in order:
        if not visible[face]:
            continue
        r, g, b = (color * shade[face]).astype(int)
        draw.polygon([tuple(p) for p in pixels[faces[face]]], fill=(int(r), int(g), int(b), 255))
    if alpha < 255:
        canvas.putalpha(canvas.getchannel("A").point(lambda a: a * alpha // 255))
    return canvas


def _draw_points(view: View, layer: PointLayer) -> Image.Image:
    canvas = Image.new("RGBA", view.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    pixels, depth = view.project(np.asarray(layer.points, dtype=np.float64))
    alpha = int(round(255 * layer.opacity))
    radius = layer.radius
    in_front = depth > 0 if view.clip_behind else np.ones(len(depth), dtype=bool)
    for u, v in pixels[np.argsort(-depth)][in_front[np.argsort(-depth)]]:
        draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=(*layer.color, alpha))
    return canvas


def render(view: View, layers: list[MeshLayer | PointLayer], background: tuple[int, int, int] = (255, 255, 255)
           ) -> Image.Image:
    """Composites the layers, in order, over the background; returns an RGB picture."""
    picture = Image.new("RGBA", view.size, (*background, 255))
    for layer in layers:
        canvas = _draw_mesh(view, layer) if isinstance(layer, MeshLayer) else _draw_points(view, layer)
        picture = Image.alpha_composite(picture, canvas)
    return picture.convert("RGB")
