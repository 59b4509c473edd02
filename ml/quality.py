"""A [0, 1] face quality score: is this crop worth matching or showing first?

Geometric mean of four cues, each in [0, 1]: face size, detector confidence,
frontal pose (nose centred between the eyes; floored, see POSE_FLOOR) and
sharpness of the aligned crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from ml.align import similarity_transform

FULL_QUALITY_FACE_PX = 80  # faces at least this wide are not penalised for size
SHARPNESS_HALF_POINT = 100.0  # Laplacian variance that scores 0.5
# A turned face is harder, not hopeless: three-quarter views (nose outside the
# eyes, frontalness 0) still match, so pose can at most halve its cue. Without
# the floor such faces scored ~0.14 and were refused as enrollment photos and
# never named (2 of lfw-dev's 264 open-set enrollment photos).
POSE_FLOOR = 0.5


def face_quality(box, landmarks: np.ndarray, score: float, crop: np.ndarray) -> float:
    size = min(1.0, min(box[2], box[3]) / FULL_QUALITY_FACE_PX)
    confidence = min(1.0, max(0.0, score))
    pose = POSE_FLOOR + (1.0 - POSE_FLOOR) * _frontalness(landmarks)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    variance = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    sharpness = variance / (variance + SHARPNESS_HALF_POINT)
    cues = np.array([size, confidence, pose, sharpness], dtype=np.float64)
    return float(np.exp(np.log(np.clip(cues, 1e-3, 1.0)).mean()))


def _frontalness(landmarks: np.ndarray) -> float:
    matrix = similarity_transform(landmarks)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2) @ matrix[:, :2].T + matrix[:, 2]
    eye_span = pts[1, 0] - pts[0, 0]
    if eye_span <= 1e-6:
        return 0.0
    nose_position = (pts[2, 0] - pts[0, 0]) / eye_span  # 0.5 when frontal
    return float(np.clip(1.0 - 2.0 * abs(nose_position - 0.5), 0.0, 1.0))
