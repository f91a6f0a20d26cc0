"""Small networks both EgoHMR stages use, with the upstream's parameter names."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResnetBlockFC", "ResnetPointnet", "image_features"]


class ResnetBlockFC(nn.Module):
    """x -> shortcut(x) + fc_1(relu(fc_0(relu(x)))); the shortcut is a bias-free linear map when
    the sizes differ (always, in EgoHMR: 512 -> 256)."""

    def __init__(self, size_in: int, size_out: int, size_h: int):
        super().__init__()
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class ResnetPointnet(nn.Module):
    """EgoHMR's scene encoder (``models/respointnet.py``): a PointNet with residual blocks and
    max-pool concatenation.

    ``forward`` maps points (B, N, 3) (metres, the camera frame in stage 1, relative to the body
    translation in stage 2) to a feature (B, out_dim). Max pooling makes it independent of the
    point order.
    """

    def __init__(self, out_dim: int = 512, hidden_dim: int = 256):
        super().__init__()
        self.out_dim = out_dim
        self.fc_pos_0 = nn.Linear(3, 2 * hidden_dim)
        for index in range(4):
            setattr(self, f"block_{index}", ResnetBlockFC(2 * hidden_dim, hidden_dim, hidden_dim))
        self.fc_c = nn.Linear(hidden_dim, out_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        net = self.block_0(self.fc_pos_0(points))
        for block in (self.block_1, self.block_2, self.block_3):
            pooled = net.amax(dim=1, keepdim=True).expand(net.shape)
            net = block(torch.cat([net, pooled], dim=2))
        return self.fc_c(F.relu(net.amax(dim=1)))


def image_features(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """ResNet-50 layer-4 map (B, 2048, 7, 7) averaged over space -> (B, 2048), as EgoHMR's
    ``models/resnet.py`` returns it."""
    return backbone(images).mean(dim=(2, 3))
