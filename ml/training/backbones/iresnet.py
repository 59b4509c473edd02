"""IResNet (insightface's "improved" ResNet for 112x112 faces), trained from scratch.

Stages L1..L4 are the four residual layers (the conv stem rides with L1);
``fc`` is BN -> dropout -> flatten -> Linear -> BN1d, as in insightface.
Input normalisation: RGB, (x/255 - 0.5) / 0.5.
"""
from __future__ import annotations

import torch
from torch import nn

from ml.training.backbones.stages import StagedBackbone


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class _Head(nn.Module):
    def __init__(self, channels: int, spatial: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial * spatial, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)

    def forward(self, x):
        return self.features(self.fc(self.dropout(self.bn2(x).flatten(1))))


class IResNet(StagedBackbone):
    def __init__(self, layers: tuple[int, int, int, int], widths=(64, 128, 256, 512),
                 embedding_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        self.embedding_dim = embedding_dim
        self._head_args = (widths[3], 7, embedding_dim, dropout)  # 112 / 2^4 = 7
        stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                             nn.BatchNorm2d(widths[0], eps=1e-5), nn.PReLU(widths[0]))
        stages, cin = [], widths[0]
        for count, width in zip(layers, widths):
            blocks = [IBasicBlock(cin, width, 2)] + [IBasicBlock(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.L1 = nn.Sequential(stem, stages[0])
        self.L2, self.L3, self.L4 = stages[1:]
        self.fc = self.new_fc()

    def new_fc(self) -> nn.Module:
        return _Head(*self._head_args)

    def preprocess(self, bgr: torch.Tensor) -> torch.Tensor:
        return (bgr.flip(1) / 255.0 - 0.5) / 0.5


def iresnet50() -> IResNet:
    return IResNet((3, 4, 14, 3))


def iresnet_tiny() -> IResNet:
    """One block per stage and narrow widths: for CPU smoke tests, not for accuracy."""
    return IResNet((1, 1, 1, 1), widths=(8, 16, 32, 64), embedding_dim=64)
