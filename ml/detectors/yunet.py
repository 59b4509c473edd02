"""YuNet (libfacedetection) through cv2.FaceDetectorYN.

The int8 model does not run in onnxruntime; OpenCV >= 4.11 runs it.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from ml.detectors.resize import Letterbox, clip_box, fit_for_detector
from ml.types import DetectedFace


class YuNetDetector:
    def __init__(self, entry, model_bytes: bytes):
        opts = entry.options
        self.score_threshold = float(opts.get("score_threshold", 0.6))
        self.max_side = int(opts.get("max_side", 640))
        self.min_side = int(opts.get("min_side", 160))
        self._net = cv2.FaceDetectorYN.create(
            "onnx",
            np.frombuffer(model_bytes, dtype=np.uint8),
            np.array([], dtype=np.uint8),
            (320, 320),
            self.score_threshold,
            float(opts.get("nms_threshold", 0.3)),
            5000,
        )
        # The OpenCV object holds per-call state (input size): one caller at a time.
        self._lock = threading.Lock()

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        height, width = img.shape[:2]
        work, letterbox = fit_for_detector(img, max_side=self.max_side, min_side=self.min_side)
        with self._lock:
            self._net.setInputSize((work.shape[1], work.shape[0]))
            _, rows = self._net.detect(work)
        return faces_from_rows(rows, letterbox, width, height)


def faces_from_rows(rows: np.ndarray | None, letterbox: Letterbox, width: int, height: int) -> list[DetectedFace]:
    """cv2.FaceDetectorYN's output rows (x, y, w, h, 5 landmarks, score) in detector pixels,
    as faces in the original image, best score first."""
    if rows is None:
        return []
    faces = []
    for row in rows:
        corners = letterbox.to_original(np.array([[row[0], row[1]], [row[0] + row[2], row[1] + row[3]]]))
        box = clip_box(np.r_[corners[0], corners[1] - corners[0]], width, height)
        if box[2] < 1 or box[3] < 1:
            continue
        landmarks = letterbox.to_original(row[4:14].reshape(5, 2))
        faces.append(DetectedFace(box=box, landmarks=landmarks, score=float(row[14])))
    faces.sort(key=lambda f: f.score, reverse=True)
    return faces
