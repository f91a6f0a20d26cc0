"""ResNet (bottleneck, "v1.5": stride in the 3x3 conv) with torchvision's parameter names.

torchvision has no CPU build here, and mmhuman3d's HMR (and other methods) checkpoints store
their backbone under torchvision's names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ...), so this module reproduces that structure and naming; the
classification layer is optional.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Bottleneck", "ResNet", "resnet50"]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a projection shortcut when
    the shape changes."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A bottleneck ResNet.

    Args:
        blocks: bottleneck blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: size of the final ``fc`` layer, or None for a feature extractor.

    ``forward`` maps images (B, 3, H, W) to the last stage's features (B, 2048, H/32, W/32)
    when ``num_classes`` is None, else to logits (B, num_classes).
    """

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 4, 6, 3), num_classes: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (count, planes, stride) in enumerate(zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2)), start=1):
            stage = []
            for block in range(count):
                stage.append(Bottleneck(in_channels, planes, stride if block == 0 else 1))
                in_channels = planes * Bottleneck.expansion
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        self.out_channels = in_channels
        self.fc = nn.Linear(in_channels, num_classes) if num_classes is not None else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.fc is None:
            return x
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet50(num_classes: int | None = None) -> ResNet:
    """ResNet-50 with torchvision's structure and parameter names (no ``fc`` by default)."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes)
