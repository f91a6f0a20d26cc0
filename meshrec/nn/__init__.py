"""Network building blocks shared by two or more method plugins.

Parameter names follow the upstream libraries the released checkpoints were trained with
(torchvision's ResNet), so upstream weights load by name.
"""

from meshrec.nn.crops import IMAGENET_MEAN, IMAGENET_STD, crop_boxes, square_boxes
from meshrec.nn.resnet import ResNet, resnet50
from meshrec.nn.rotations import (
    matrix_from_6d_prohmr,
    matrix_from_6d_pytorch3d,
    matrix_from_6d_spin,
    matrix_to_6d_prohmr,
    matrix_to_6d_pytorch3d,
    matrix_to_6d_spin,
    matrix_to_axis_angle,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNet",
    "crop_boxes",
    "matrix_from_6d_prohmr",
    "matrix_from_6d_pytorch3d",
    "matrix_from_6d_spin",
    "matrix_to_6d_prohmr",
    "matrix_to_6d_pytorch3d",
    "matrix_to_6d_spin",
    "matrix_to_axis_angle",
    "resnet50",
    "square_boxes",
]
