"""Per-face mask state from an aligned crop: "no_mask", "mask" or "mask_incorrect"."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.attributes import mask_net

MODEL_ID = "mask-cnn-v1"
BATCH = 64


@dataclass
class MaskPrediction:
    label: str  # "no_mask" | "mask" | "mask_incorrect"
    score: float  # probability of ``label``
    probs: dict[str, float]  # every label's probability

    @property
    def masked(self) -> bool:
        """Mouth covered by something mask-like, worn properly or not."""
        return self.label != "no_mask"


class MaskClassifier:
    """Tiny CNN trained on synthetic masks (``python -m ml.attributes.train_mask``); NumPy only."""

    def __init__(self, params: dict[str, np.ndarray]):
        self._params = params

    @classmethod
    def load(cls, model_id: str = MODEL_ID) -> "MaskClassifier":
        """From the manifest (sha256-checked ``weights/mask/mask_cnn.npz``)."""
        from weights import model_bytes

        return cls(mask_net.load_weights(model_bytes(model_id)))

    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, 3) probabilities in ``mask_net.LABELS`` order for aligned 112x112 BGR crops."""
        out = np.zeros((len(crops), len(mask_net.LABELS)), np.float32)
        for start in range(0, len(crops), BATCH):
            x = mask_net.preprocess(crops[start : start + BATCH])
            out[start : start + BATCH] = mask_net.softmax(mask_net.logits(self._params, x))
        return out

    def predict(self, crops: list[np.ndarray]) -> list[MaskPrediction]:
        results = []
        for row in self.probabilities(crops):
            k = int(np.argmax(row))
            results.append(MaskPrediction(
                label=mask_net.LABELS[k], score=float(row[k]),
                probs={label: float(p) for label, p in zip(mask_net.LABELS, row)},
            ))
        return results
