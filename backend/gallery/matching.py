"""Matching a face embedding against an owner's gallery of enrollment templates.

Rule (documented in README): pull the K nearest templates of this owner from the
HNSW index (cosine), score each identity by its best template, ignore
identities the face was marked "not this person" for, and accept the best
identity when its score is at least the model's threshold (weights manifest)
and beats the runner-up identity by the ambiguity margin. Otherwise the face is
unknown.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from backend.core.pipeline import get_pipeline

from .models import Template


@dataclass(frozen=True)
class Match:
    identity_id: int | None
    similarity: float | None  # best identity's score, kept even when unknown
    runner_up_similarity: float | None = None


def configure_vector_search() -> None:
    """Session settings for HNSW queries; call inside a transaction."""
    with connection.cursor() as cursor:
        # Owner filters are applied after the index scan: iterative scans keep
        # fetching until enough rows pass the filter (pgvector >= 0.8). One
        # round trip for both (no parameters: the value is formatted as an int).
        cursor.execute(f"SET LOCAL hnsw.ef_search = {int(settings.FACEINDEX_HNSW_EF_SEARCH)}; "
                       "SET LOCAL hnsw.iterative_scan = relaxed_order")


def match_threshold() -> float:
    return float(get_pipeline().threshold)


def identity_scores(owner_id: int, embedding: np.ndarray, *, k: int | None = None, probe_masked: bool = False) -> dict[int, float]:
    """Best cosine similarity per identity among the K nearest templates.

    Synthetic-masked templates take part only for masked probes: against bare
    probes they add false matches and no true ones (measured, docs/masks.md).
    """
    return identity_scores_batch(owner_id, [embedding], [probe_masked], k=k)[0]


def identity_scores_batch(owner_id: int, embeddings, probes_masked, *, k: int | None = None) -> list[dict[int, float]]:
    """identity_scores for many faces of one owner in one query, same rule.

    A LATERAL join runs one K-nearest scan of the template index per probe
    inside a single statement, so a batch of faces costs one round trip.
    """
    k = k or settings.FACEINDEX_MATCH_CANDIDATES
    embeddings = [np.asarray(e, dtype=np.float32) for e in embeddings]
    if not embeddings:
        return []
    vectors = ["[" + ",".join(f"{v:.9g}" for v in e.tolist()) + "]" for e in embeddings]
    sql = f"""
        SELECT probe.ordinal, nearest.identity_id, nearest.distance
        FROM unnest(%s::int[], %s::text[], %s::bool[]) AS probe(ordinal, embedding, masked)
        CROSS JOIN LATERAL (
            SELECT t.identity_id, t.embedding <=> probe.embedding::vector AS distance
            FROM {Template._meta.db_table} t
            WHERE t.owner_id = %s AND (probe.masked OR NOT t.masked)
            ORDER BY t.embedding <=> probe.embedding::vector
            LIMIT %s
        ) AS nearest
    """
    scores: list[dict[int, float]] = [{} for _ in embeddings]
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(range(len(vectors))), vectors, [bool(m) for m in probes_masked], owner_id, k])
        for ordinal, identity_id, distance in cursor.fetchall():
            similarity = 1.0 - float(distance)
            if similarity > scores[ordinal].get(identity_id, -2.0):
                scores[ordinal][identity_id] = similarity
    return scores


def decide(scores: dict[int, float], *, threshold: float, excluded: set[int] = frozenset()) -> Match:
    ranked = sorted(((s, i) for i, s in scores.items() if i not in excluded), reverse=True)
    if not ranked:
        return Match(None, None)
    best_similarity, best_identity = ranked[0]
    runner_up = ranked[1][0] if len(ranked) > 1 else None
    if best_similarity < threshold:
        return Match(None, best_similarity, runner_up)
    if runner_up is not None and runner_up >= threshold and best_similarity - runner_up < settings.FACEINDEX_AMBIGUITY_MARGIN:
        # Two identities fit almost equally well (siblings, twins): leave the
        # face unknown rather than silently merging them.
        return Match(None, best_similarity, runner_up)
    return Match(best_identity, best_similarity, runner_up)


def match_embedding(owner_id: int, embedding: np.ndarray, *, threshold: float | None = None,
                    excluded: set[int] = frozenset(), probe_masked: bool = False) -> Match:
    threshold = match_threshold() if threshold is None else threshold
    scores = identity_scores(owner_id, embedding, probe_masked=probe_masked)
    return decide(scores, threshold=threshold, excluded=excluded)
