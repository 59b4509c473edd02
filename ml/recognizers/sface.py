"""SFace (OpenCV Zoo, int8) through cv2.dnn.

On OpenCV 5.0 ``cv2.FaceRecognizerSF.feature()`` fails on the int8 file, so the
network runs directly with its named input ``data``: RGB, 0..255, no mean/std.
Batches of crops go through one forward pass.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

MAX_BATCH = 32


class SFaceRecognizer:
    def __init__(self, entry, model_bytes: bytes):
        self.embedding_dim = int(entry.embedding_dim or 128)
        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(model_bytes, dtype=np.uint8))
        self._lock = threading.Lock()  # a cv2.dnn.Net is not safe to share between threads

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(crops), MAX_BATCH):
            batch = crops[start : start + MAX_BATCH]
            blob = cv2.dnn.blobFromImages(batch, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)
            with self._lock:
                self._net.setInput(blob, "data")
                chunks.append(np.array(self._net.forward(), dtype=np.float32).reshape(len(batch), -1))
        raw = np.concatenate(chunks)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
