"""Face detectors. Each turns a BGR image into DetectedFace objects in that image's pixels.

Adding one: a module here with a class taking ``(entry, model_bytes)`` and
offering ``detect(img)``, plus its name in ``IMPLEMENTATIONS`` and a manifest
entry whose ``implementation`` names it.
"""
from __future__ import annotations

IMPLEMENTATIONS = {
    "yunet": "ml.detectors.yunet:YuNetDetector",
    "retinaface": "ml.detectors.retinaface:RetinaFaceDetector",
}


def load_detector(model_id: str):
    from ml.registry import build_model

    return build_model(model_id, "detector", IMPLEMENTATIONS)
