"""Per-face attributes: mask state, sex and age; synthetic masks for matching.

    from ml.attributes import MaskClassifier, AgeSexEstimator, load_sex_classifier, synthesize_masked, masked_templates

Names load lazily so ``import ml.attributes`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MaskClassifier": "ml.attributes.mask_classifier",
    "MaskPrediction": "ml.attributes.mask_classifier",
    "AgeSexEstimator": "ml.attributes.age_sex",
    "AgeSex": "ml.attributes.age_sex",
    "load_sex_classifier": "ml.attributes.sex_classifier",
    "synthesize_masked": "ml.attributes.overlay",
    "masked_templates": "ml.attributes.templates",
    "MASK_NAMES": "ml.package_images",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ml.attributes' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
