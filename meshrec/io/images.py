"""Image reading: files, numpy arrays and tensors to (H, W, 3) uint8 RGB."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meshrec.errors import ImageReadError

__all__ = ["IMAGE_SUFFIXES", "check_image_file", "describe_missing", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def describe_missing(path: Path) -> str:
    """Why ``path`` is not a readable file: a folder, a symlink loop, a dangling link, or absent."""
    if path.is_dir():
        return "is a folder, not a file"
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports loops this way
            return "is a symbolic link that loops back on itself"
        except OSError as error:
            if error.errno == errno.ELOOP:
                return "is a symbolic link that loops back on itself"
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
    if not path.exists():
        return "does not exist"
    return "is not a regular file"


def check_image_file(path: Path, name: str | None = None) -> None:
    """Cheap check (header only) that ``path`` is an image Pillow can decode."""
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    if not path.is_file():
        raise ImageReadError(f"image {name} {describe_missing(path)}")
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (parses the header)
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"image {name} is too large to decode safely ({error}); "
                             "downscale it first") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ImageReadError(f"cannot read image {name}: not an image Pillow can decode ({error})") from error


def read_image(source: Any, name: str | None = None) -> np.ndarray:
    """An image as a (H, W, 3) uint8 RGB array.

    Args:
        source: a path; a numpy array (H, W, 3) uint8 RGB or (H, W) grey; a tensor (3, H, W)
            float in [0, 1] or uint8 (torchvision's layout).
        name: how errors refer to the image.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(source)
        check_image_file(path, name)
        try:
            with Image.open(path) as image:
                if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
                    # 16-bit (or 32-bit integer) grey: Pillow's convert("RGB") clips to white; scale
                    # the full range to 8 bits instead.
                    deep = np.asarray(image, dtype=np.float64)
                    top = 65535.0 if image.mode.startswith("I;16") else max(float(deep.max()), 1.0)
                    grey = np.clip(np.round(deep / top * 255.0), 0, 255).astype(np.uint8)
                    return np.repeat(grey[:, :, None], 3, axis=2)
                return np.array(image.convert("RGB"))  # writable: torch.from_numpy needs that
        except Image.DecompressionBombError as error:
            raise ImageReadError(f"image {name} is too large to decode safely ({error}); downscale it first") from None
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ImageReadError(f"cannot decode image {name}: {error}") from error
    if torch.is_tensor(source):
        tensor = source.detach().cpu()
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise ImageReadError(f"image tensor {name} must have shape (3, H, W), got {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise ImageReadError(f"image tensor {name} contains NaN or infinite values")
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise ImageReadError(f"image tensor {name} must be float in [0, 1] or uint8, got {tensor.dtype}")
        return np.ascontiguousarray(tensor.expand(3, -1, -1).permute(1, 2, 0).numpy())
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ImageReadError(f"image array {name} must have shape (H, W, 3), got {source.shape}")
        if array.dtype != np.uint8:
            raise ImageReadError(
                f"image array {name} must be uint8 RGB (0-255), got {array.dtype}; convert with "
                "(array * 255).round().astype(np.uint8) if it holds values in [0, 1]"
            )
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageReadError(f"cannot read image {name}: unsupported type {type(source).__name__}")
