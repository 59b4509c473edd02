"""Recognizer for models exported by ``ml.training.export`` (onnxruntime, no torch).

Same shape as the ``ml.recognizers`` classes: built from ``(entry, model_bytes)``,
``embed(crops) -> (n, dim)`` float32, L2-normalised. The graph does its own
normalisation, so crops go in as BGR float pixels.
"""
from __future__ import annotations

import numpy as np

MAX_BATCH = 32


class OnnxRecognizer:
    def __init__(self, entry, model_bytes: bytes):
        import onnxruntime as ort

        self._session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self.embedding_dim = int(entry.embedding_dim or self._session.get_outputs()[0].shape[1])

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        chunks = [
            self._session.run(None, {"crop": np.stack(crops[i:i + MAX_BATCH]).astype(np.float32)})[0]
            for i in range(0, len(crops), MAX_BATCH)
        ]
        raw = np.concatenate(chunks).astype(np.float32)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
