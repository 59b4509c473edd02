"""YuNet (2023mar, anchor-free) in torch, with cv2.FaceDetectorYN's pre- and post-processing.

Per image, as OpenCV 4.8+/5.0 ``FaceDetectorYN::detect`` does: the image
(already fitted by ``fit_for_detector``, exactly as the cv2 path) is padded
with zeros on the right and bottom to a multiple of 32 and fed as BGR 0..255;
each stride s in (8, 16, 32) gives, per grid cell (r, c), score =
sqrt(clip(cls) * clip(obj)), box centre ((c, r) + d) * s, size exp(d) * s and
landmarks ((c, r) + k) * s. Cells under the score threshold are dropped, then
greedy NMS runs on the boxes truncated to integers (cv2.dnn.NMSBoxes on
Rect2i), best score first, keeping a box whose IoU with every kept one is at
most the NMS threshold.

Batches: images whose padded shapes are equal run as one forward pass (an
archive of one camera's photos is one shape). Letterboxing to a few fixed
shapes was measured and rejected: extra zero padding changes the network's
output (the first conv's bias turns the padding non-zero and the features
shift), and on 160 dev photos padding to multiples of 128 moved boxes by up to
16 px, padding to 960x960 up to 20 px and changed the face count of 3 photos.
So images are never padded beyond cv2's own multiple of 32: parity first.
"""
from __future__ import annotations

import numpy as np
import torch

from ml.detectors.resize import Letterbox, fit_for_detector
from ml.detectors.yunet import faces_from_rows
from ml.torch_models.device import resolve_device
from ml.torch_models.graph import OnnxModule
from ml.torch_models.onnx_proto import read_onnx
from ml.types import DetectedFace

STRIDES = (8, 16, 32)
DIVISOR = 32
TOP_K = 5000


def pad_to_divisor(img: np.ndarray) -> np.ndarray:
    """Zero-pad right and bottom to a multiple of 32 (FaceDetectorYN's own padding)."""
    height, width = img.shape[:2]
    pad_h, pad_w = -height % DIVISOR, -width % DIVISOR
    if pad_h == 0 and pad_w == 0:
        return img
    return np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)))


class TorchYuNet:
    """Same interface as ml.detectors.yunet.YuNetDetector, plus ``detect_batch``."""

    def __init__(self, entry, model_bytes: bytes, device: torch.device | str | None = None):
        opts = entry.options
        self.score_threshold = float(opts.get("score_threshold", 0.6))
        self.nms_threshold = float(opts.get("nms_threshold", 0.3))
        self.max_side = int(opts.get("max_side", 640))
        self.min_side = int(opts.get("min_side", 160))
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.net = OnnxModule(read_onnx(model_bytes), "input").eval().to(self.device)
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.float16 on a GPU; None = float32

    def fit(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The padded detector input for one BGR image (CPU work; safe to run on threads)."""
        work, letterbox = fit_for_detector(img, max_side=self.max_side, min_side=self.min_side)
        return pad_to_divisor(work), letterbox

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        return self.detect_batch([img])[0]

    def detect_batch(self, imgs: list[np.ndarray]) -> list[list[DetectedFace]]:
        fitted = [self.fit(img) for img in imgs]
        rows = self.detect_fitted([work for work, _ in fitted], [work.shape[:2] for work, _ in fitted])
        return [faces_from_rows(r, letterbox, img.shape[1], img.shape[0])
                for r, (_, letterbox), img in zip(rows, fitted, imgs)]

    def detect_fitted(self, works: list[np.ndarray], sizes=None) -> list[np.ndarray]:
        """cv2-style rows (n, 15) per padded detector input; one forward pass per distinct shape."""
        results: list[np.ndarray | None] = [None] * len(works)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, work in enumerate(works):
            groups.setdefault(work.shape[:2], []).append(i)
        for shape, members in groups.items():
            batch = torch.from_numpy(np.stack([works[i] for i in members]))
            for i, rows in zip(members, self.rows_for_batch(batch, shape)):
                results[i] = rows
        return results

    @torch.inference_mode()
    def rows_for_batch(self, batch_hwc_uint8: torch.Tensor, shape: tuple[int, int]) -> list[np.ndarray]:
        """Rows for a (B, H, W, 3) uint8 BGR batch, H and W multiples of 32."""
        x = batch_hwc_uint8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                outputs = self.net(x)
        else:
            outputs = self.net(x)
        candidates = self._decode([o.float() for o in outputs], shape)
        return [_nms(c, self.score_threshold, self.nms_threshold) for c in candidates]

    def _decode(self, outputs: list[torch.Tensor], shape: tuple[int, int]) -> list[np.ndarray]:
        levels = len(STRIDES)
        per_level = []
        for i, stride in enumerate(STRIDES):
            cls, obj, bbox, kps = (outputs[i + levels * k] for k in range(4))
            rows, cols = shape[0] // stride, shape[1] // stride
            idx = torch.arange(rows * cols, device=cls.device)
            grid = torch.stack([idx % cols, idx // cols], dim=1).to(torch.float32)  # (c, r)
            score = torch.sqrt(cls[..., 0].clamp(0, 1) * obj[..., 0].clamp(0, 1))
            centre = (grid + bbox[..., :2]) * stride
            size = torch.exp(bbox[..., 2:]) * stride
            top_left = centre - size / 2
            landmarks = ((kps.reshape(*kps.shape[:2], 5, 2) + grid[:, None, :]) * stride).flatten(2)
            per_level.append(torch.cat([top_left, size, landmarks, score[..., None]], dim=2))
        every = torch.cat(per_level, dim=1)  # (B, cells, 15), cv2's order: stride, row, column
        keep = every[..., 14] >= self.score_threshold
        counts = keep.sum(dim=1).tolist()
        chosen = every[keep].cpu().numpy()
        return np.split(chosen, np.cumsum(counts)[:-1]) if counts else []


def _nms(rows: np.ndarray, score_threshold: float, nms_threshold: float) -> np.ndarray:
    """cv2.dnn.NMSBoxes on Rect2i(int(x), int(y), int(w), int(h)), as FaceDetectorYN calls it."""
    if len(rows) <= 1:
        return rows
    boxes = np.trunc(rows[:, :4]).astype(np.int64)
    scores = rows[:, 14]
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > score_threshold][:TOP_K]
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            iw = np.minimum(x1[i], x1[k]) - np.maximum(x0[i], x0[k])
            ih = np.minimum(y1[i], y1[k]) - np.maximum(y0[i], y0[k])
            inter = np.where((iw > 0) & (ih > 0), iw * ih, 0).astype(np.float64)
            union = (area[i] + area[k]).astype(np.float64) - inter
            overlap = np.where(area[i] + area[k] > 0, inter / np.where(union > 0, union, 1), 1.0)
            if np.any(overlap.astype(np.float32) > np.float32(nms_threshold)):
                continue
        kept.append(int(i))
    return rows[kept]
