"""Result types of the face pipeline."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DetectedFace:
    box: tuple[float, float, float, float]  # x, y, w, h in original-image pixels
    # (5, 2) float32 in image coordinates, ArcFace order: right eye, left eye,
    # nose tip, right mouth corner, left mouth corner (the subject's right eye
    # is the one on the image's left).
    landmarks: np.ndarray
    score: float


@dataclass
class EmbeddedFace(DetectedFace):
    embedding: np.ndarray  # (dim,) float32, L2-normalised
    crop: np.ndarray  # 112x112x3 uint8 BGR aligned crop
    quality: float  # [0, 1], higher = better
