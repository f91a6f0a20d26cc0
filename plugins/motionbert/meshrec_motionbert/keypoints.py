"""Keypoint handling around the network: layouts, normalisation, windows, flipping.

Everything here works on one person's sequence (T, 17, 3): H36M-17 joints, ``(x, y,
confidence)`` in pixels before :func:`normalize`, in roughly [-1, 1] after.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from meshrec_motionbert.model import H36M_FLIP_LEFT, H36M_FLIP_RIGHT

__all__ = [
    "COCO_TO_H36M",
    "SMPL_FLIP_PAIRS",
    "average_rotations",
    "coco_to_h36m",
    "flip_keypoints",
    "flip_rotations",
    "frame_owners",
    "normalize",
    "window_starts",
]

# COCO-17 -> H36M-17 (the conversion of mmpose's pose lifters): joints taken as they are, and
# pelvis = mid-hip, thorax = mid-shoulder, spine = mid(pelvis, thorax), head top = mid-eye.
COCO_TO_H36M = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
# SMPL joints swapped by a horizontal flip (upstream lib/utils/utils_mesh.py flip_thetas).
SMPL_FLIP_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))


def coco_to_h36m(keypoints: np.ndarray) -> np.ndarray:
    """(..., 17, 3) COCO-17 keypoints -> (..., 17, 3) H36M-17.

    Made-up joints are midpoints of two COCO joints; their confidence is the smaller of the two
    (a midpoint is as good as its worse end).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros_like(keypoints)
    for h36m, coco in COCO_TO_H36M.items():
        out[..., h36m, :] = keypoints[..., coco, :]

    def midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([(a[..., :2] + b[..., :2]) / 2, np.minimum(a[..., 2:], b[..., 2:])], axis=-1)

    out[..., 0, :] = midpoint(keypoints[..., 11, :], keypoints[..., 12, :])
    out[..., 8, :] = midpoint(keypoints[..., 5, :], keypoints[..., 6, :])
    out[..., 7, :] = midpoint(out[..., 0, :], out[..., 8, :])
    out[..., 10, :] = midpoint(keypoints[..., 1, :], keypoints[..., 2, :])
    return out


def normalize(keypoints: np.ndarray, mode: str = "bbox", image_size: Sequence[float] | None = None) -> np.ndarray:
    """One person's (T, 17, 3) pixel keypoints -> the network's input (T, 17, 3).

    Confidence is clipped to [0, 1] (as upstream's datasets do). Then, with ``mode``:

    - ``"bbox"`` (upstream's in-the-wild ``crop_scale``, ``lib/utils/utils_data.py``): the square
      of side s = max(w, h) of the box around every keypoint with confidence > 0 over the whole
      sequence, centred on that box, maps to [-1, 1]: ``x' = 2 (x - x0) / s - 1`` with
      ``x0 = (xmin + xmax - s) / 2`` (same for y), and the result is clipped to [-1, 1].
    - ``"image"`` (upstream's training datasets, ``lib/data/datareader_mesh.py``): with the image
      width W and height H, ``x' = x / W * 2 - 1`` and ``y' = y / W * 2 - H / W`` (both divided by
      the width: aspect kept), not clipped. Upstream trained on 3DPW with W = H = 1920.

    Raises:
        ValueError: fewer than 4 confident keypoint coordinates or a zero-size box ("bbox";
            upstream would feed zeros), or no / a non-positive ``image_size`` ("image").
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    out = keypoints.copy()
    out[..., 2] = np.clip(out[..., 2], 0.0, 1.0)
    if mode == "bbox":
        valid = keypoints[out[..., 2] > 0][:, :2]
        if len(valid) < 4:
            raise ValueError(f"normalization='bbox' needs at least 4 keypoints with confidence > 0 in the sequence, "
                             f"found {len(valid)}; drop this person or pass keypoints with confidences")
        low, high = valid.min(axis=0), valid.max(axis=0)
        scale = float((high - low).max())
        if scale <= 0:
            raise ValueError("normalization='bbox': all confident keypoints are at one point (a zero-size box)")
        corner = (low + high - scale) / 2
        out[..., :2] = ((keypoints[..., :2] - corner) / scale - 0.5) * 2
        return np.clip(out, -1.0, 1.0)
    if mode == "image":
        if image_size is None:
            raise ValueError("normalization='image' needs the image size: pass image_size=(W, H) to load_method "
                             "or an image with the keypoints")
        width, height = (float(v) for v in image_size)
        if not (width > 0 and height > 0):
            raise ValueError(f"image_size must be two positive numbers (W, H), got {tuple(image_size)}")
        out[..., 0] = keypoints[..., 0] / width * 2 - 1
        out[..., 1] = keypoints[..., 1] / width * 2 - height / width
        return out
    raise ValueError(f"normalization must be 'bbox' or 'image', got {mode!r}")


def flip_keypoints(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of normalised keypoints (..., 17, C): x -> -x and left/right joints
    swapped (upstream ``flip_data``)."""
    flipped = x.clone()
    flipped[..., 0] = -flipped[..., 0]
    order = list(range(x.shape[-2]))
    for left, right in zip(H36M_FLIP_LEFT, H36M_FLIP_RIGHT):
        order[left], order[right] = right, left
    return flipped[..., order, :]


def flip_rotations(rotmat: torch.Tensor) -> torch.Tensor:
    """SMPL rotations (..., 24, 3, 3) of a mirrored body -> those of the body mirrored back:
    left/right joints swapped and each R -> M R M with M = diag(-1, 1, 1) (in axis-angle terms
    upstream's ``flip_thetas``: (x, y, z) -> (x, -y, -z))."""
    order = list(range(rotmat.shape[-3]))
    for a, b in SMPL_FLIP_PAIRS:
        order[a], order[b] = b, a
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=rotmat.dtype, device=rotmat.device)
    swapped = rotmat[..., order, :, :]
    return swapped * mirror[:, None] * mirror[None, :]


def average_rotations(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The rotation midway between two rotations (..., 3, 3): the projection of their mean onto
    SO(3) (SVD), which for two rotations less than pi apart is the geodesic midpoint."""
    u, _, vh = torch.linalg.svd((first + second) / 2)
    det = torch.linalg.det(u @ vh)
    fix = torch.ones(*det.shape, 3, dtype=det.dtype, device=det.device)
    fix[..., 2] = torch.sign(det)
    return (u * fix[..., None, :]) @ vh


def window_starts(frames: int, clip_len: int, overlap: int) -> list[int]:
    """Start frames of the windows covering ``frames`` frames: one window when it fits, else
    windows of ``clip_len`` frames every ``clip_len - overlap`` frames, the last one ending at the
    last frame (so it may overlap its neighbour more)."""
    if frames < 1:
        raise ValueError("a sequence needs at least one frame")
    if not 0 <= overlap < clip_len:
        raise ValueError(f"window_overlap must be in [0, clip_len), got {overlap} for clip_len {clip_len}")
    if frames <= clip_len:
        return [0]
    step = clip_len - overlap
    starts = list(range(0, frames - clip_len, step))
    starts.append(frames - clip_len)
    return sorted(set(starts))


def frame_owners(frames: int, clip_len: int, starts: Sequence[int]) -> np.ndarray:
    """(frames,) index of the window each frame is taken from: among the windows holding it, the
    one where it lies farthest from the window's ends (ties: the earlier window). For equal
    windows this splits every overlap at its middle."""
    t = np.arange(frames)[:, None]
    begin = np.asarray(starts)[None, :]
    end = np.minimum(begin + clip_len, frames) - 1
    margin = np.minimum(t - begin, end - t).astype(np.float64)
    margin[(t < begin) | (t > end)] = -np.inf
    return margin.argmax(axis=1)
