"""Face detectors. Each turns a BGR image into DetectedFace objects in that image's pixels.

Adding one: a module here with a class taking ``(entry, model_bytes)`` and
offering ``detect(img)``, plus its name in ``IMPLEMENTATIONS`` and a manifest
entry whose ``implementation`` names it.
"""
from __future__ import annotations

import importlib

IMPLEMENTATIONS = {
    "yunet": "ml.detectors.yunet:YuNetDetector",
    "retinaface": "ml.detectors.retinaface:RetinaFaceDetector",
}


def load_detector(model_id: str):
    import weights

    entry = weights.model_entry(model_id)
    if entry.kind != "detector":
        raise ValueError(f"model {model_id!r} is a {entry.kind}, not a detector")
    target = IMPLEMENTATIONS.get(entry.implementation or "")
    if target is None:
        raise ValueError(f"no detector implementation {entry.implementation!r} for {model_id!r}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(entry, weights.model_bytes(model_id))
