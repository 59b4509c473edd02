"""Face recognizers: aligned 112x112 BGR crops in, L2-normalised embeddings out.

Adding one: a module here with a class taking ``(entry, model_bytes)`` and
offering ``embed(crops) -> (n, dim) float32`` (normalised), plus its name in
``IMPLEMENTATIONS`` and a manifest entry whose ``implementation`` names it.
"""
from __future__ import annotations

IMPLEMENTATIONS = {
    "sface": "ml.recognizers.sface:SFaceRecognizer",
    "onnx": "ml.recognizers.onnx:OnnxRecognizer",  # models from ml.training.export
    "facenet": "ml.recognizers.facenet:FaceNetRecognizer",  # imports torch when built
}


def load_recognizer(model_id: str):
    from ml.registry import build_model

    return build_model(model_id, "recognizer", IMPLEMENTATIONS)
