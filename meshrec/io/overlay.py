"""The recovered meshes drawn over the photo (``meshrec predict --render``), with a side view."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from meshrec.io.render import Mesh, render_meshes

__all__ = ["PERSON_COLORS", "overlay_intrinsics", "render_overlay", "render_side_view"]

# one colour per person, cycled; distinct on photos (no skin tones, no greys)
PERSON_COLORS = ((66, 135, 245), (245, 130, 48), (60, 180, 75), (230, 25, 75), (145, 30, 180),
                 (70, 240, 240), (240, 50, 230), (210, 245, 60))
_warned_default = False


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def overlay_intrinsics(prediction: Any, image_size: tuple[int, int], camera: Any = None) -> tuple[np.ndarray, str]:
    """The (3, 3) intrinsics to draw ``prediction`` with, and where they came from.

    ``camera`` (the user's intrinsics) first, then the method's ``extras["intrinsics"]`` (first
    person's when per person), else :func:`meshrec.camera.default_intrinsics` (focal length =
    image diagonal in pixels, CLIFF's convention, the one meshrec's methods use without a
    camera), with a warning the first time.
    """
    global _warned_default
    if camera is not None:
        return _numpy(camera).reshape(3, 3), "given"
    extras = getattr(prediction, "extras", None) or {}
    if extras.get("intrinsics") is not None:
        K = _numpy(extras["intrinsics"])
        return (K.reshape(-1, 3, 3)[0] if K.size > 9 else K.reshape(3, 3)), "method"
    from meshrec.camera import default_intrinsics

    width, height = image_size
    K = default_intrinsics(height, width, torch.float64).numpy()
    if not _warned_default:
        _warned_default = True
        warnings.warn(f"meshrec: no intrinsics for the overlay; using the default focal length = image diagonal "
                      f"({K[0, 0]:.0f} px for {width}x{height}, a 53 degree diagonal field of view); pass the "
                      "camera (--camera FX FY CX CY) to draw with yours", stacklevel=2)
    return K, "default"


def _meshes(prediction: Any, opacity: float, rotate: np.ndarray | None = None) -> list[Mesh]:
    if prediction.faces is None:
        raise ValueError(f"prediction of {prediction.method!r} has no faces: its meshes cannot be drawn")
    vertices = _numpy(prediction.vertices)
    faces = _numpy(prediction.faces).astype(np.int64)
    if rotate is not None and len(vertices):
        centre = vertices.reshape(-1, 3).mean(axis=0)
        vertices = (vertices - centre) @ rotate.T + centre
    return [Mesh(v, faces, PERSON_COLORS[i % len(PERSON_COLORS)], opacity=opacity) for i, v in enumerate(vertices)]


def render_overlay(prediction: Any, image: np.ndarray, camera: Any = None, opacity: float = 0.6) -> np.ndarray:
    """The prediction's meshes over ``image`` (H, W, 3) uint8: shaded, semi-transparent, one
    colour per person (:data:`PERSON_COLORS`). Returns (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the overlay needs the photo as (H, W, 3) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    K, _ = overlay_intrinsics(prediction, (width, height), camera)
    if prediction.num_people == 0:
        return image.copy()
    return render_meshes(_meshes(prediction, opacity), K, (width, height), background=image)


def render_side_view(prediction: Any, image_size: tuple[int, int], camera: Any = None) -> np.ndarray:
    """The meshes seen from the right side (turned 90 degrees about the vertical axis through
    their centre), opaque on white: shows the depths the photo cannot. (H, W, 3) uint8."""
    width, height = image_size
    K, _ = overlay_intrinsics(prediction, (width, height), camera)
    if prediction.num_people == 0:
        return np.full((height, width, 3), 255, np.uint8)
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return render_meshes(_meshes(prediction, 1.0, rotate=turn), K, (width, height))
