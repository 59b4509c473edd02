"""Small helpers shared by the ml tests."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def bgr_to_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def rotate(bgr: np.ndarray, degrees: float) -> np.ndarray:
    height, width = bgr.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(bgr, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def png_with_claimed_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR rewritten to claim width x height (a decompression bomb header)."""
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    assert ihdr[:4] == b"IHDR"
    return png[:16] + ihdr[4:] + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def package_image_bytes(name: str) -> bytes:
    """The bytes of an image in insightface's data/images (e.g. "t1.jpg")."""
    from ml.package_images import insightface_images_dir

    return (insightface_images_dir() / name).read_bytes()


def varied_copies(path, count: int) -> dict[str, bytes]:
    """Distinct files of the same scene (scale and brightness vary)."""
    base = cv2.imread(str(path))
    files = {}
    for i in range(count):
        scale = 0.6 + 0.4 * (i / count)
        img = cv2.resize(base, None, fx=scale, fy=scale)
        img = np.clip(img.astype(np.int16) + (i % 7) - 3, 0, 255).astype(np.uint8)
        files[f"copy-{i:03d}.jpg"] = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return files
