"""Helpers shared by the gallery, clustering and admin service tests."""
from __future__ import annotations

import time

import cv2
import numpy as np



def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    """Poll a condition the background worker makes true (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s")
        time.sleep(0.2)


def faces_of(job_id: int, name: str):
    from backend.gallery.models import Face

    # Multipart uploads keep only the base name.
    return Face.objects.filter(image__job_id=job_id, image__original_name=name.rsplit("/", 1)[-1]).order_by("ordinal")


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def small_face_in_large_photo(face: np.ndarray, *, width: int = 3000, size: int = 80) -> tuple[bytes, list[float]]:
    """A face too small for the detector at its working size (960 px), and a user's box around it."""
    canvas = np.full((width * 3 // 4, width, 3), 170, np.uint8)
    y, x = width // 3, width // 2
    canvas[y:y + size, x:x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    return jpeg(canvas), [x + size * 0.15, y + size * 0.1, size * 0.7, size * 0.85]


def gallery_snapshot(owner) -> dict:
    """Everything a merge may change, to compare before a merge and after its undo."""
    from backend.gallery.models import Face, Identity, Rejection, Template

    return {
        "identities": list(Identity.objects.filter(owner=owner).order_by("id").values_list("id", "name", "created_at", "updated_at")),
        "templates": [(t.pk, t.identity_id, t.crop_key, t.source_key, np.asarray(t.embedding, dtype=np.float32).tobytes())
                      for t in Template.objects.filter(owner=owner).order_by("id")],
        "faces": list(Face.objects.filter(owner=owner).order_by("id")
                      .values_list("id", "identity_id", "similarity", "identity_locked", "cluster_id")),
        "rejections": list(Rejection.objects.filter(face__owner=owner).order_by("id").values_list("id", "face_id", "identity_id", "created_at")),
    }
