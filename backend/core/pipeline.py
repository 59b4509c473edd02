"""The face pipeline, loaded once per process (API process or Celery worker)."""
from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy as np

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load():
    from ml.pipeline import FacePipeline

    return FacePipeline.from_manifest()


def get_pipeline():
    # lru_cache is not a lock: two API threads must not load the models twice.
    with _lock:
        return _load()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode JPEG")
    return buf.tobytes()
