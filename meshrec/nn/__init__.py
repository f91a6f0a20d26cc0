"""Network building blocks shared by two or more method plugins.

Parameter names follow the upstream libraries the released checkpoints were trained with
(torchvision's ResNet), so upstream weights load by name. Rotation conversions (6D layouts,
axis-angle) live in :mod:`meshrec.rotations`.
"""

from meshrec.nn.crops import IMAGENET_MEAN, IMAGENET_STD, crop_boxes, square_boxes
from meshrec.nn.resnet import ResNet, resnet50

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNet",
    "crop_boxes",
    "resnet50",
    "square_boxes",
]
