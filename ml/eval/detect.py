"""``detect``: recall, precision and AP at IoU 0.5 against WIDER FACE-format ground truth.

Ground truth file: for each image a line with its path (relative to --root),
a line with the face count, then one ``x y w h [blur expression illumination
invalid occlusion pose]`` line per face (WIDER writes one all-zero line when the
count is 0). Faces flagged invalid are ignored: neither missed nor matched.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.decode import decode_image

IOU_MATCH = 0.5


def read_wider_gt(text: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(relative path, (n,4) boxes, (n,) ignore flags)]."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out, i = [], 0
    while i < len(lines):
        path, count = lines[i], int(lines[i + 1])
        rows = [list(map(float, line.split())) for line in lines[i + 2 : i + 2 + max(count, 1)]]
        i += 2 + max(count, 1)
        if count == 0:
            out.append((path, np.zeros((0, 4)), np.zeros(0, dtype=bool)))
            continue
        boxes = np.array([r[:4] for r in rows], dtype=np.float64)
        invalid = np.array([len(r) > 7 and r[7] == 1 for r in rows], dtype=bool)
        invalid |= (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
        out.append((path, boxes, invalid))
    return out


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax0, ay0, ax1, ay1 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1) - np.maximum(ax0[:, None], bx0), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1) - np.maximum(ay0[:, None], by0), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


def run_detect(pipeline, gt_file: Path, root: Path) -> dict:
    records = read_wider_gt(gt_file.read_text())
    scored = []  # (score, is true positive) for every detection not on an ignored face
    n_gt = 0
    for rel, gt_boxes, ignore in tqdm(records, desc="detect", file=sys.stderr, unit="img"):
        img = decode_image((root / rel).read_bytes()).pixels
        faces = pipeline.detect(img)
        n_gt += int((~ignore).sum())
        det = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        ious = _iou_matrix(det, gt_boxes) if len(gt_boxes) else np.zeros((len(det), 0))
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in range(len(det)):  # faces arrive best score first
            candidates = np.where((ious[d] >= IOU_MATCH) & ~taken)[0] if ious.shape[1] else []
            if len(candidates):
                g = candidates[np.argmax(ious[d, candidates])]
                taken[g] = True
                if ignore[g]:
                    continue
                scored.append((faces[d].score, True))
            else:
                scored.append((faces[d].score, False))
    scored.sort(key=lambda s: -s[0])
    hits = np.array([tp for _, tp in scored], dtype=bool)
    tp_cum = np.cumsum(hits)
    recall_curve = tp_cum / max(n_gt, 1)
    precision_curve = tp_cum / np.arange(1, len(hits) + 1)
    return {
        "recall": float(tp_cum[-1] / max(n_gt, 1)) if len(hits) else 0.0,
        "precision": float(tp_cum[-1] / len(hits)) if len(hits) else None,
        "ap_iou50": _average_precision(recall_curve, precision_curve),
        "images": len(records),
        "ground_truth_faces": n_gt,
        "detections": len(hits),
    }


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC all-points interpolation)."""
    if len(recall) == 0:
        return 0.0
    r = np.concatenate([[0.0], recall, [recall[-1]]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.where(r[1:] != r[:-1])[0]
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())
