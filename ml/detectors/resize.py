"""Fit any image to a detector's working size, and map results back.

Big photos are shrunk so the longest side is at most ``max_side``; small ones
(a 60x60 face crop) are enlarged to ``min_side`` and framed with a grey border,
because detectors miss faces that fill or touch the whole frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Letterbox:
    scale: float
    pad: int  # border added on every side, in detector pixels

    def to_original(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float32) - self.pad) / self.scale


def fit_for_detector(img: np.ndarray, *, max_side: int, min_side: int) -> tuple[np.ndarray, Letterbox]:
    height, width = img.shape[:2]
    longest = max(height, width)
    if longest > max_side:
        scale = max_side / longest
        interpolation = cv2.INTER_AREA
    elif longest < min_side:
        scale = min_side / longest
        interpolation = cv2.INTER_LINEAR
    else:
        scale = 1.0
        interpolation = None
    if interpolation is not None:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        img = cv2.resize(img, size, interpolation=interpolation)
        scale = size[0] / width  # the exact factor after rounding
    pad = 0
    if longest < min_side:
        pad = min_side // 4
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    return img, Letterbox(scale=scale, pad=pad)


def clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) clipped to the image."""
    x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x1, y1 = min(float(width), float(box[0] + box[2])), min(float(height), float(box[1] + box[3]))
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))
