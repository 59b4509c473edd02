"""Face recognizers: aligned 112x112 BGR crops in, L2-normalised embeddings out.

Adding one: a module here with a class taking ``(entry, model_bytes)`` and
offering ``embed(crops) -> (n, dim) float32`` (normalised), plus its name in
``IMPLEMENTATIONS`` and a manifest entry whose ``implementation`` names it.
"""
from __future__ import annotations

import importlib

IMPLEMENTATIONS = {
    "sface": "ml.recognizers.sface:SFaceRecognizer",
    "onnx": "ml.recognizers.onnx:OnnxRecognizer",  # models from ml.training.export
    "facenet": "ml.recognizers.facenet:FaceNetRecognizer",  # imports torch when built
}


def load_recognizer(model_id: str):
    import weights

    entry = weights.model_entry(model_id)
    if entry.kind != "recognizer":
        raise ValueError(f"model {model_id!r} is a {entry.kind}, not a recognizer")
    target = IMPLEMENTATIONS.get(entry.implementation or "")
    if target is None:
        raise ValueError(f"no recognizer implementation {entry.implementation!r} for {model_id!r}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(entry, weights.model_bytes(model_id))
