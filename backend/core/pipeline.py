"""The face pipeline, loaded once per process (API process or Celery worker)."""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from django.conf import settings

_lock = threading.Lock()
# One model call at a time per process. The API serves requests on threads
# (gunicorn gthread) that share one set of models, and cv2.dnn's networks are
# not safe to run from two threads at once; it also keeps a burst of searches
# from taking every core from the quick requests beside them.
_inference_lock = threading.RLock()


class Serialized:
    """The wrapped model with every method call made under the process's inference lock."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        value = getattr(self._model, name)
        if not callable(value):
            return value

        def locked(*args, **kwargs):
            with _inference_lock:
                return value(*args, **kwargs)

        return locked


def _torch_device():
    """The torch device FACEINDEX_DEVICE selects (a CUDA GPU, or the CPU for torch-cpu), or None for the cv2 CPU path.

    ``auto`` looks for the NVIDIA driver before importing torch, so CPU-only
    processes never pay for loading it.
    """
    name = (settings.FACEINDEX_DEVICE or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not Path("/proc/driver/nvidia").exists()):
        return None
    from ml.torch_models.device import resolve_device

    if name == TORCH_ON_CPU:
        return resolve_device("cpu")
    device = resolve_device(name)  # a named GPU that is not there is an error, not a silent CPU run
    return device if device.type == "cuda" else None


# FACEINDEX_DEVICE value: the torch path (batches on a device, combined messages) run on
# the CPU, so tests exercise a GPU worker's code without a GPU. Slower than cv2 here.
TORCH_ON_CPU = "torch-cpu"


def runs_on_gpu() -> bool:
    """Whether this process's face models run on a GPU: it is then a GPU worker (jobs.routing)."""
    device = _torch_device()
    return device is not None and device.type == "cuda"


@lru_cache(maxsize=1)
def _load():
    from ml.pipeline import FacePipeline

    from backend.gallery.models import EMBEDDING_DIM

    models = {"detector": settings.FACEINDEX_DETECTOR or None, "recognizer": settings.FACEINDEX_RECOGNIZER or None}
    device = _torch_device()
    if device is not None:
        from ml.torch_models.pipeline import TorchFacePipeline

        pipeline = TorchFacePipeline.from_manifest(**models, device=device)
    else:
        pipeline = FacePipeline.from_manifest(**models)
    if pipeline.embedding_dim != EMBEDDING_DIM:
        # Vectors of another width cannot share the gallery's columns or index.
        raise RuntimeError(
            f"recognizer {pipeline.recognizer_id!r} emits {pipeline.embedding_dim}-d embeddings but the gallery "
            f"stores {EMBEDDING_DIM}-d vectors; choose a {EMBEDDING_DIM}-d recognizer or migrate the vector columns"
        )
    check_embedding_space(pipeline.recognizer_id, pipeline.embedding_dim)
    return pipeline


def check_embedding_space(recognizer_id: str, embedding_dim: int) -> None:
    """Refuse a recognizer other than the one whose vectors this database holds."""
    from backend.gallery.models import EmbeddingSpace

    space, _ = EmbeddingSpace.objects.get_or_create(
        pk=1, defaults={"recognizer_id": recognizer_id, "embedding_dim": embedding_dim})
    if space.recognizer_id != recognizer_id:
        raise RuntimeError(
            f"this database holds {space.recognizer_id} embeddings; recognizer {recognizer_id!r} makes vectors "
            f"that cannot be compared with them. Use {space.recognizer_id} (FACEINDEX_RECOGNIZER), "
            f"or a new database and re-index."
        )


def get_pipeline():
    # lru_cache is not a lock: two API threads must not load the models twice.
    with _lock:
        return Serialized(_load())


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode JPEG")
    return buf.tobytes()


@lru_cache(maxsize=1)
def _load_mask_classifier():
    from ml.attributes import MaskClassifier

    return MaskClassifier.load()


@lru_cache(maxsize=1)
def _load_age_sex():
    from ml.attributes import AgeSexEstimator

    # The manifest's sex classifier may read the recognizer's embeddings:
    # it must be the recognizer this process embeds with.
    recognizer = settings.FACEINDEX_RECOGNIZER or None
    return AgeSexEstimator.load(recognizer_id=recognizer)


def get_mask_classifier():
    with _lock:
        return Serialized(_load_mask_classifier())


def get_age_sex_estimator():
    with _lock:
        return Serialized(_load_age_sex())
