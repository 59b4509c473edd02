"""Training augmentations on aligned 112x112 BGR crops (numpy + OpenCV).

All randomness comes from the caller's ``np.random.Generator`` so a checkpoint
that saves its state resumes with identical batches.
"""
from __future__ import annotations

import cv2
import numpy as np


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, colour jitter, blur and synthetic occlusion, each applied at random."""
    out = crop
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.8:
        out = colour_jitter(out, rng)
    if rng.random() < 0.2:
        sigma = rng.uniform(0.5, 1.5)
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), sigma)
    if rng.random() < 0.3:
        out = occlude(out, rng)
    return np.ascontiguousarray(out)


def colour_jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = crop.astype(np.float32)
    brightness = rng.uniform(-0.2, 0.2) * 255
    contrast = rng.uniform(0.8, 1.2)
    saturation = rng.uniform(0.8, 1.2)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + (img - gray) * saturation
    img = (img - img.mean()) * contrast + img.mean() + brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def occlude(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rectangle (15-40% of each side) of flat grey or noise, like a hand or a mask."""
    h, w = crop.shape[:2]
    rh, rw = int(h * rng.uniform(0.15, 0.4)), int(w * rng.uniform(0.15, 0.4))
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    out = crop.copy()
    if rng.random() < 0.5:
        out[y:y + rh, x:x + rw] = rng.integers(0, 256, dtype=np.uint8)
    else:
        out[y:y + rh, x:x + rw] = rng.integers(0, 256, size=(rh, rw, 3), dtype=np.uint8)
    return out
