"""Square person crops, resized and normalised for image backbones.

Matches mmhuman3d's test-time pipeline: a square of side ``scale * max(w, h)`` centred on the
box, mapped to ``size x size`` pixels by an affine warp with bilinear sampling and a black
border (OpenCV ``warpAffine`` conventions: the crop's centre lands on pixel (size/2, size/2)),
then ImageNet mean / std on RGB values in [0, 255].
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "crop_boxes", "square_boxes"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, on the 0-255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)


def square_boxes(boxes: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (P, 2) and sides (P,) of the squares around boxes (P, 4) x1, y1, x2, y2:
    side = scale * max(width, height)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1) * scale
    return centres, sides


def crop_boxes(
    image: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, size: int = 224, normalise: bool = True
) -> torch.Tensor:
    """Crops squares out of one image.

    Args:
        image: (3, H, W) RGB, float in [0, 255] or uint8.
        centres: (P, 2) square centres in pixels; sides: (P,) square sides in pixels.
        size: output side in pixels.
        normalise: subtract the ImageNet mean and divide by its std.

    Returns:
        (P, 3, size, size) float32 crops (zeros outside the image before normalisation).
    """
    image = image.float()
    height, width = image.shape[-2:]
    # Output pixel centre k maps to centre + (k - size/2) * side/size in the source (OpenCV's
    # affine convention); grid_sample wants normalised coordinates of pixel centres.
    steps = torch.arange(size, dtype=torch.float32, device=image.device) - size / 2
    ratio = (sides / size).float()
    xs = centres[:, 0:1].float() + steps * ratio[:, None]
    ys = centres[:, 1:2].float() + steps * ratio[:, None]
    grid_x = (2 * xs + 1) / width - 1
    grid_y = (2 * ys + 1) / height - 1
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)
    crops = F.grid_sample(image.expand(len(centres), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    if normalise:
        mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
        crops = (crops - mean) / std
    return crops
