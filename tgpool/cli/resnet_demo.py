"""A tiny ResNet built from torch.nn only, for ``tgpool.patch`` to switch over (no weights).

The pooling a ResNet really has: the stem's 3x3 stride-2 max pool, a ResNet-D shortcut (a 2x2
average pool before the 1x1 convolution, instead of a strided 1x1 that skips three quarters of the
input; Bag of Tricks, He et al. 2019) and the global average pool of the head. Widths are tiny so
the Triton interpreter runs a forward and backward in seconds.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "TinyResNet"]


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut; a downsampling block's shortcut is ResNet-D's
    ``AvgPool2d(2, ceil_mode=True, count_include_pad=False)`` then a 1x1 convolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout)
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            self.shortcut = nn.Sequential(pool, *_conv_bn(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    """stem (conv, BN, ReLU, ``MaxPool2d(3, 2, 1)``) -> 3 basic blocks (two downsample) ->
    ``AdaptiveAvgPool2d(1)`` -> linear. (N, 3, H, W) -> (N, classes)."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn(3, width), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)
        )
        self.layers = nn.Sequential(
            BasicBlock(width, width),
            BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 4 * width, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))
