"""Network building blocks shared by two or more method plugins.

Parameter names follow the upstream libraries the released checkpoints were trained with
(torchvision's ResNet, the HRNet-W64 of SA-HMR's root net, DINOv2's ViT), so upstream weights load
by name. Rotation conversions (6D layouts,
axis-angle) live in :mod:`meshrec.rotations`.
"""

from meshrec.nn.crops import IMAGENET_MEAN, IMAGENET_STD, crop_boxes, square_boxes
from meshrec.nn.hrnet import HRNet, hrnet_w64
from meshrec.nn.resnet import ResNet, resnet50
from meshrec.nn.vit import VisionTransformer, block_diagonal_attention, vit_base

__all__ = [
    "HRNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResNet",
    "VisionTransformer",
    "block_diagonal_attention",
    "crop_boxes",
    "hrnet_w64",
    "resnet50",
    "square_boxes",
    "vit_base",
]
