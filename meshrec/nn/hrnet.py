"""HRNet (High-Resolution Network), the classification variant ("cls_hrnet") that METRO and SA-HMR use.

Parameter names follow the HRNet-Image-Classification code that METRO ships
(``metro/modeling/hrnet/hrnet_cls_net*.py``) and SA-HMR copies (``hrnet_cls_net_featmaps.py``):
``conv1``/``bn1``/``conv2``/``bn2`` (stem), ``layer1`` (stage 1, Bottleneck), ``transition{1,2,3}``,
``stage{2,3,4}.<module>.branches.<b>.<block>.*``, ``stage*.<module>.fuse_layers.<i>.<j>.*`` and, with
the classification head, ``incre_modules``, ``downsamp_modules``, ``final_layer`` and
``classifier``. A METRO / SA-HMR ``backbone.*`` state dict (prefix stripped) loads with
``strict=True``. Written from the architecture's description; checked against the upstream module
in the plugin's fidelity script.

Two outputs are used downstream:

- ``head=True`` (METRO's backbone, SA-HMR's ``metro_enhanced.backbone``): the (B, 2048, H/32, W/32)
  map after ``final_layer`` (7 x 7 for a 224 crop). ``classifier`` (2048 -> 1000) is kept so the
  checkpoints load, but is never applied (as upstream).
- ``head=False`` (SA-HMR's ``featmap4s_only``, RCNet's ``root_net.hrnet``): the (B, W, H/4, W/4)
  highest-resolution branch after stage 4 (64 x 56 x 56 for HRNet-W64 at 224).

>>> net = hrnet_w64(head=False)          # RCNet's image branch
>>> net(torch.zeros(1, 3, 224, 224)).shape
torch.Size([1, 64, 56, 56])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["HRNet", "hrnet_w64"]

BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN after each, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False), _bn(planes * block.expansion)
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output resolution sums every branch:
    1x1 conv + BN + nearest upsampling from lower resolutions, chains of strided 3x3 conv + BN
    (ReLU between them) from higher ones."""

    def __init__(self, channels: Sequence[int], num_blocks: int) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList([_make_layer(BasicBlock, c, c, num_blocks) for c in channels])
        self.fuse_layers = None
        if self.num_branches > 1:
            fuse_layers = []
            for i in range(self.num_branches):
                row: list[nn.Module | None] = []
                for j in range(self.num_branches):
                    if j > i:
                        row.append(nn.Sequential(
                            nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False), _bn(channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        ))
                    elif j == i:
                        row.append(None)
                    else:
                        steps = []
                        for k in range(i - j):
                            last = k == i - j - 1
                            out = channels[i] if last else channels[j]
                            layers = [nn.Conv2d(channels[j], out, 3, 2, 1, bias=False), _bn(out)]
                            if not last:
                                layers.append(nn.ReLU(False))
                            steps.append(nn.Sequential(*layers))
                        row.append(nn.Sequential(*steps))
                fuse_layers.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU(False)

    def forward(self, x: list[torch.Tensor], outputs: int | None = None) -> list[torch.Tensor]:
        """``outputs``: how many resolutions to fuse (all by default); fewer skips unused work."""
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        if self.fuse_layers is None:
            return x
        fused = []
        for i in range(self.num_branches if outputs is None else outputs):
            y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
            for j in range(1, self.num_branches):
                y = y + (x[j] if i == j else self.fuse_layers[i][j](x[j]))
            fused.append(self.relu(y))
        return fused


class HRNet(nn.Module):
    """HRNet-W<width> as in HRNet-Image-Classification (stage 1: Bottleneck, stages 2-4: BASIC).

    Args:
        width: channels of the highest-resolution branch (64 for HRNet-W64); branch b has
            width * 2**b channels.
        num_modules: high-resolution modules in stages 2, 3, 4 (1, 4, 3 for W64).
        num_blocks: blocks per branch in every stage (4).
        head: build the classification head (``incre_modules``, ``downsamp_modules``,
            ``final_layer``, ``classifier``) and return its (B, final_channels, H/32, W/32) map;
            False returns the stride-4 (B, width, H/4, W/4) map (SA-HMR's ``featmap4s_only``).
        head_channels: Bottleneck planes of the head per branch ((32, 64, 128, 256); x4 channels).
        final_channels: channels of ``final_layer`` (2048).
        num_classes: outputs of the (unused) ``classifier``.
        stem_channels: channels of the two stride-2 stem convs and of stage 1's planes (64).

    Input: (B, 3, H, W) ImageNet-normalised RGB with H, W multiples of 32 (of 4 without the head).
    """

    def __init__(
        self,
        width: int = 64,
        num_modules: Sequence[int] = (1, 4, 3),
        num_blocks: int = 4,
        head: bool = True,
        head_channels: Sequence[int] = (32, 64, 128, 256),
        final_channels: int = 2048,
        num_classes: int = 1000,
        stem_channels: int = 64,
    ) -> None:
        super().__init__()
        if len(num_modules) != 3:
            raise ValueError(f"num_modules gives stages 2, 3, 4: three numbers, got {tuple(num_modules)}")
        self.head = head
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = _bn(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = _bn(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(Bottleneck, stem_channels, stem_channels, num_blocks)
        previous = [stem_channels * Bottleneck.expansion]
        for stage, modules in zip((2, 3, 4), num_modules):
            channels = [width * 2 ** b for b in range(stage)]
            setattr(self, f"transition{stage - 1}", self._transition(previous, channels))
            setattr(self, f"stage{stage}", nn.Sequential(*[HighResolutionModule(channels, num_blocks)
                                                          for _ in range(modules)]))
            previous = channels
        if head:
            self.incre_modules = nn.ModuleList([
                _make_layer(Bottleneck, c, h, 1) for c, h in zip(previous, head_channels)
            ])
            self.downsamp_modules = nn.ModuleList([
                nn.Sequential(
                    nn.Conv2d(head_channels[i] * 4, head_channels[i + 1] * 4, 3, 2, 1),
                    _bn(head_channels[i + 1] * 4),
                    nn.ReLU(inplace=True),
                )
                for i in range(len(previous) - 1)
            ])
            self.final_layer = nn.Sequential(
                nn.Conv2d(head_channels[-1] * 4, final_channels, 1, 1, 0), _bn(final_channels), nn.ReLU(inplace=True)
            )
            self.classifier = nn.Linear(final_channels, num_classes)
        self.out_channels = final_channels if head else width
        self.reset_parameters()

    @staticmethod
    def _transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
        layers: list[nn.Module | None] = []
        for i, channels in enumerate(current):
            if i < len(previous):
                if channels != previous[i]:
                    layers.append(nn.Sequential(nn.Conv2d(previous[i], channels, 3, 1, 1, bias=False), _bn(channels),
                                                nn.ReLU(inplace=True)))
                else:
                    layers.append(None)  # kept as a hole so that indices match upstream keys
            else:
                steps = []
                for j in range(i + 1 - len(previous)):
                    out = channels if j == i - len(previous) else previous[-1]
                    steps.append(nn.Sequential(nn.Conv2d(previous[-1], out, 3, 2, 1, bias=False), _bn(out),
                                               nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def reset_parameters(self) -> None:
        """HRNet's initialisation: Kaiming-normal (fan-out) convolutions, unit BatchNorms."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, 2048, H/32, W/32) with the head, else (B, width, H/4, W/4)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HRNet takes images of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            # As upstream, a transition layer reads the lowest-resolution output of the previous stage
            # (only new branches have one after stage 2).
            xs = [ys[i] if layer is None else layer(ys[-1]) for i, layer in enumerate(transition)]
            modules = getattr(self, f"stage{stage}")
            for index, module in enumerate(modules):
                last = stage == 4 and index == len(modules) - 1
                # Without the head only branch 0 of the last fusion is used: skip the others.
                xs = module(xs, outputs=1 if last and not self.head else None)
            ys = xs
        if not self.head:
            return ys[0]
        y = self.incre_modules[0](ys[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + down(y)
        return self.final_layer(y)


def hrnet_w64(head: bool = True) -> HRNet:
    """HRNet-W64 (cls_hrnet_w64_sgd_lr5e-2_wd1e-4_bs32_x100): ~128 M parameters with the head."""
    return HRNet(width=64, num_modules=(1, 4, 3), num_blocks=4, head=head)
