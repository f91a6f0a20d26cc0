"""Image preprocessing as MA-HMR / SAT-HMR's ``datasets/base.py`` (inference path).

The long side is resized to ``input_size`` (1288) with bilinear interpolation (OpenCV's
``cv2.resize`` default, no antialiasing), the short side to ``int(rate * side)`` (computed in
float32 as upstream, whose rate is a float32 tensor), the result rounded to 8 bits, zero-padded
at the bottom and right to a multiple of 56, then scaled to [0, 1] and normalised with ImageNet's
mean and std (so padding holds -mean/std, as upstream pads before normalising).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MIN_SIDE", "Preprocessed", "preprocess", "read_sixteen_bit", "resized_size"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIDE = 32  # pixels: below this an image holds no detectable person
PAD_MULTIPLE = 56


@dataclass
class Preprocessed:
    """image: (3, Hp, Wp) normalised, padded; size: (h, w) resized before padding;
    rate: resized pixels per original pixel (input_size / original long side); original: (H, W)."""

    image: torch.Tensor
    size: tuple[int, int]
    rate: float
    original: tuple[int, int]


def resized_size(height: int, width: int, input_size: int = 1288) -> tuple[tuple[int, int], float]:
    """((h, w), rate) after resizing the long side to ``input_size`` as upstream does."""
    long_side = width if width >= height else height
    rate = np.float32(input_size) / np.float32(long_side)
    short = int(np.float32(rate) * np.float32(height if width >= height else width))
    size = (short, input_size) if width >= height else (input_size, short)
    return size, float(input_size) / float(long_side)


def preprocess(image: np.ndarray, input_size: int = 1288, max_side: int = 4 * 1288,
               device: torch.device | str = "cpu", name: str = "image") -> Preprocessed:
    """(H, W, 3) uint8 RGB -> the network's input (see the module docstring).

    Images with a side under 32 px raise ValueError; images whose long side exceeds ``max_side``
    are first downscaled to it with antialiasing, with a warning (bilinear resizing without
    antialiasing by more than ~4x aliases, and the full-size float copy costs memory).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{name} is {height}x{width} pixels: MA-HMR needs at least {MIN_SIDE} px per side "
                         f"(it resizes the long side to {input_size}); pass a larger image")
    pixels = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float()
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        pre = (max(1, round(height * factor)), max(1, round(width * factor)))
        warnings.warn(f"{name} is {height}x{width} pixels: downscaled to {pre[0]}x{pre[1]} (antialiased) before "
                      f"MA-HMR's resize to a {input_size}-pixel long side", stacklevel=3)
        pixels = F.interpolate(pixels, size=pre, mode="bilinear", antialias=True, align_corners=False)
        pixels = pixels.round().clamp(0, 255)
    (new_h, new_w), _ = resized_size(*pixels.shape[-2:], input_size)
    rate = input_size / max(height, width)  # resized pixels per original pixel
    resized = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    resized = resized.round().clamp(0, 255)[0] / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    pad_h = -(-new_h // PAD_MULTIPLE) * PAD_MULTIPLE
    pad_w = -(-new_w // PAD_MULTIPLE) * PAD_MULTIPLE
    padded = torch.zeros(3, pad_h, pad_w, device=device)
    padded[:, :new_h, :new_w] = resized
    return Preprocessed(image=(padded - mean) / std, size=(new_h, new_w), rate=rate, original=(height, width))


def read_sixteen_bit(path: str | Path) -> np.ndarray | None:
    """A 16-bit (or 32-bit integer) greyscale image file as (H, W, 3) uint8, scaled by its bit
    depth (65535 -> 255); None for any other kind of file. Pillow's RGB conversion of such
    images clips every value above 255, which would turn most photos white."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return None
    try:
        with Image.open(path) as image:
            if not image.mode.startswith(("I;16", "I")) or image.mode.startswith("I;8"):
                return None
            array = np.asarray(image).astype(np.float64)
    except OSError:
        return None
    top = 65535.0 if array.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
    grey = np.clip(np.round(array / top * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)
