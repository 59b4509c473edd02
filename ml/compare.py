"""Cosine similarity and threshold-based verify / identify helpers."""
from __future__ import annotations

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cosine_similarity(a, b) -> float | np.ndarray:
    """Cosine similarity of two vectors (a float) or of (n,d) x (m,d) matrices ((n,m) array)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 1 and b.ndim == 1:
        return float(_normalise(a) @ _normalise(b))
    sims = _normalise(np.atleast_2d(a)) @ _normalise(np.atleast_2d(b)).T
    return sims


def default_threshold(recognizer: str | None = None) -> float:
    """The manifest's default match threshold for ``recognizer`` (default recognizer if None)."""
    import weights

    model_id = recognizer or weights.default_model_id("recognizer")
    threshold = weights.model_entry(model_id).default_threshold
    if threshold is None:
        raise ValueError(f"manifest gives no default_threshold for {model_id!r}")
    return float(threshold)


def verify(a, b, *, threshold: float | None = None, recognizer: str | None = None) -> tuple[bool, float]:
    """(same person?, similarity) for two embeddings; threshold from the manifest unless given."""
    if threshold is None:
        threshold = default_threshold(recognizer)
    similarity = cosine_similarity(a, b)
    return similarity >= threshold, similarity


def identify(
    probe, gallery, *, threshold: float | None = None, recognizer: str | None = None, top_k: int = 1
) -> list[tuple[int, float]]:
    """Best gallery rows for ``probe`` as (row index, similarity), best first, only those >= threshold."""
    if threshold is None:
        threshold = default_threshold(recognizer)
    gallery = np.atleast_2d(np.asarray(gallery, dtype=np.float32))
    if gallery.shape[0] == 0:
        return []
    sims = cosine_similarity(np.atleast_2d(probe), gallery)[0]
    order = np.argsort(-sims)[:top_k]
    return [(int(i), float(sims[i])) for i in order if sims[i] >= threshold]
