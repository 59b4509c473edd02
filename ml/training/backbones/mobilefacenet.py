"""MobileFaceNet (Chen et al. 2018): depthwise bottlenecks and a global depthwise
(GDC) embedding head, trained from scratch.

Stages: L1 stem (conv 3x3/2 + depthwise 3x3), L2 the 64-channel bottlenecks,
L3 the 128-channel 14x14 bottlenecks, L4 the 7x7 bottlenecks + 1x1 conv to 512;
``fc`` the GDC head to the embedding. Input normalisation: RGB, (x/255 - 0.5) / 0.5.
"""
from __future__ import annotations

import torch
from torch import nn

from ml.training.backbones.stages import StagedBackbone


def conv_bn(cin, cout, kernel=1, stride=1, padding=0, groups=1, act=True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 expand -> depthwise 3x3 -> 1x1 linear project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden),
            conv_bn(hidden, hidden, 3, stride, 1, groups=hidden),
            conv_bn(hidden, cout, act=False),
        )

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def _stage(cin, cout, first_stride, count, expansion) -> list[nn.Module]:
    return [Bottleneck(cin, cout, first_stride, expansion)] + [
        Bottleneck(cout, cout, 1, expansion) for _ in range(count - 1)]


class _GDCHead(nn.Module):
    def __init__(self, embedding_dim: int):
        super().__init__()
        self.gdc = conv_bn(512, 512, 7, groups=512, act=False)
        self.linear = nn.Conv2d(512, embedding_dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x):
        return self.bn(self.linear(self.gdc(x)).flatten(1))


class MobileFaceNet(StagedBackbone):
    def __init__(self, embedding_dim: int = 128):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.L1 = nn.Sequential(conv_bn(3, 64, 3, 2, 1), conv_bn(64, 64, 3, 1, 1, groups=64))
        self.L2 = nn.Sequential(*_stage(64, 64, 2, 5, 2))            # 56 -> 28
        self.L3 = nn.Sequential(*_stage(64, 128, 2, 1, 4), *_stage(128, 128, 1, 6, 2))  # 28 -> 14
        self.L4 = nn.Sequential(*_stage(128, 128, 2, 1, 4), *_stage(128, 128, 1, 2, 2),  # 14 -> 7
                                conv_bn(128, 512))
        self.fc = self.new_fc()

    def new_fc(self) -> nn.Module:
        return _GDCHead(self.embedding_dim)

    def preprocess(self, bgr: torch.Tensor) -> torch.Tensor:
        return (bgr.flip(1) / 255.0 - 0.5) / 0.5


def mobilefacenet() -> MobileFaceNet:
    return MobileFaceNet()
