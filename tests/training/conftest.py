"""A tiny folder-per-identity dataset made from package-shipped photos.

Identities: each face in insightface's t1.jpg group photo, skimage's
astronaut and insightface's Tom Hanks portrait. Every identity gets several
photo variants (rescaled, rotated, re-lit, mirrored, re-cropped), written as
JPEGs, so the dataset goes through the real decode -> detect -> align path.
"""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from ml.package_images import astronaut_bgr as _astronaut
from ml.package_images import read_package_image as _package_image

PHOTOS_PER_IDENTITY = 5


def _variant(region: np.ndarray, k: int) -> np.ndarray:
    """Photo variant k: a deterministic mix of scale, rotation, brightness and mirroring."""
    h, w = region.shape[:2]
    angle = (-8, 5, 0, 9, -4)[k % 5]
    scale = (1.0, 1.15, 0.9, 1.05, 1.2)[k % 5]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(region, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = cv2.convertScaleAbs(out, alpha=(1.0, 0.85, 1.1, 0.95, 1.05)[k % 5], beta=(0, 10, -10, 5, 0)[k % 5])
    if k % 2:
        out = out[:, ::-1]
    return np.ascontiguousarray(cv2.resize(out, None, fx=(1.0, 1.3, 0.8, 1.1, 0.9)[k % 5],
                                           fy=(1.0, 1.3, 0.8, 1.1, 0.9)[k % 5]))


def _face_regions(pipeline) -> list[np.ndarray]:
    """Each face of t1.jpg with generous context, plus the two portraits."""
    regions = []
    group = _package_image("t1.jpg")
    for face in pipeline.detect(group):
        x, y, w, h = face.box
        cx, cy, half = x + w / 2, y + h / 2, max(w, h) * 1.2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(group.shape[1], cx + half)), int(min(group.shape[0], cy + half))
        regions.append(group[y0:y1, x0:x1])
    return regions + [_astronaut()[0:300, 100:400], _package_image("Tom_Hanks_54745.png")]


@pytest.fixture(scope="session")
def tiny_faces_dir(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("tiny_faces")
    for i, region in enumerate(_face_regions(pipeline)):
        folder = root / f"person_{i:02d}"
        folder.mkdir()
        for k in range(PHOTOS_PER_IDENTITY):
            cv2.imwrite(str(folder / f"photo_{k}.jpg"), _variant(region, k), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return root


@pytest.fixture(scope="session")
def tiny_faces(tiny_faces_dir, tmp_path_factory, pipeline):
    from ml.training.data import load_aligned_faces
    return load_aligned_faces(tiny_faces_dir, cache_dir=tmp_path_factory.mktemp("cache"),
                              pipeline=pipeline, progress=False)
