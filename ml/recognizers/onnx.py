"""Recognizers exported by ``ml.training.export``, run with onnxruntime (no torch).

The graph takes ``crop``: (n, 112, 112, 3) float32 BGR pixels 0..255, the
pipeline's aligned crops cast to float, and does its own normalisation; its
output is the embedding, re-normalised here so any exporter's graph works.
"""
from __future__ import annotations

import numpy as np

MAX_BATCH = 32
INPUT_NAME = "crop"


class OnnxRecognizer:
    def __init__(self, entry, model_bytes: bytes):
        import onnxruntime as ort

        self._session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self._session.get_inputs()]
        if inputs != [INPUT_NAME]:
            raise ValueError(f"{entry.id!r}: expected one ONNX input {INPUT_NAME!r}, got {inputs}")
        self.embedding_dim = int(entry.embedding_dim or self._session.get_outputs()[0].shape[1])

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        chunks = [
            self._session.run(None, {INPUT_NAME: np.stack(crops[i:i + MAX_BATCH]).astype(np.float32)})[0]
            for i in range(0, len(crops), MAX_BATCH)
        ]
        raw = np.concatenate(chunks).astype(np.float32)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
