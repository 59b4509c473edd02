"""Matching a face embedding against an owner's gallery of enrollment templates.

Rule (documented in docs/gallery.md): pull the K nearest templates of this
owner from the HNSW index (cosine), score each identity by its best template,
ignore identities the face was marked "not this person" for, and accept the
best identity when its score reaches the owner's open-set threshold
(``match_rule``). That threshold comes from a target false-positive
identification rate (FPIR, FACEINDEX_TARGET_FPIR) and the number of templates
the face is compared with, through the recognizer's impostor tail
(ml.openset): every enrollment raises it a little, so a growing gallery does
not name more strangers. Otherwise the face is unknown. A face whose quality
(ml/quality.py) is below FACEINDEX_MATCH_MIN_QUALITY is never named: it is
unknown with the outcome ``low_quality`` (too small or blurred to tell).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q

from ml.openset import openset_threshold

from backend.core.pipeline import get_pipeline

from .models import EMBEDDING_SQL_TYPE, MatchingPolicy, Template


@dataclass(frozen=True)
class Match:
    identity_id: int | None
    similarity: float | None  # best identity's score, kept even when unknown
    runner_up_similarity: float | None = None
    low_quality: bool = False  # unknown because the face is below the rule's min_quality


def is_low_quality(quality: float | None) -> bool:
    """Too small or blurred to name reliably (FACEINDEX_MATCH_MIN_QUALITY, chosen on lfw-dev: README)."""
    return quality is not None and quality < settings.FACEINDEX_MATCH_MIN_QUALITY


def low_quality_faces() -> Q:
    """Stored faces left unknown because of their quality (a filter on Face)."""
    return Q(identity__isnull=True, quality__lt=settings.FACEINDEX_MATCH_MIN_QUALITY)


def face_outcome(identity_id: int | None, quality: float | None) -> str:
    """What matching made of a stored face: named, unknown, or low_quality (unknown because of its quality)."""
    if identity_id is not None:
        return "named"
    return "low_quality" if is_low_quality(quality) else "unknown"


def vector_search_settings() -> list[str]:
    """The session settings for HNSW queries (transaction-local), as statements to send alone or with others.

    Owner filters are applied after the index scan: iterative scans keep
    fetching until enough rows pass the filter (pgvector >= 0.8). No
    parameters: the value is formatted as an int.
    """
    return [f"SET LOCAL hnsw.ef_search = {int(settings.FACEINDEX_HNSW_EF_SEARCH)}",
            "SET LOCAL hnsw.iterative_scan = relaxed_order"]


def configure_vector_search() -> None:
    """Session settings for HNSW queries; call inside a transaction. One round trip for both."""
    with connection.cursor() as cursor:
        cursor.execute("; ".join(vector_search_settings()))


def vector_literal(embedding) -> str:
    """An embedding as pgvector's text form, cast in SQL where it is used (``%s::{EMBEDDING_SQL_TYPE}``)."""
    return "[" + ",".join(f"{v:.9g}" for v in np.asarray(embedding, dtype=np.float32).tolist()) + "]"


@dataclass(frozen=True)
class MatchRule:
    """Thresholds of one owner's gallery as it stands: bare probes meet bare templates only."""

    threshold: float
    masked_threshold: float
    target_fpir: float
    templates: int
    masked_templates: int

    def threshold_for(self, probe_masked: bool) -> float:
        return self.masked_threshold if probe_masked else self.threshold

    @property
    def lowest(self) -> float:
        return min(self.threshold, self.masked_threshold)


def threshold_for_gallery(comparisons: int, *, target_fpir: float | None = None, masked: bool = False) -> float:
    """The open-set threshold for a probe compared with ``comparisons`` templates.

    ``masked``: for a probe called masked, from the masked-probe impostor tail
    (manifest masked_impostor_tail) where there is one. Never below the
    recognizer's pair threshold (manifest default_threshold): a tiny gallery
    is not matched more loosely than a 1:1 comparison.
    """
    pipeline = get_pipeline()
    target = settings.FACEINDEX_TARGET_FPIR if target_fpir is None else target_fpir
    tail = pipeline.tail_for(masked)
    if tail is None:
        return float(pipeline.threshold)
    return openset_threshold(tail, target_fpir=target, comparisons=comparisons,
                             floor=float(pipeline.threshold))


def owner_target_fpir(owner_id: int) -> float:
    """The owner's own target (MatchingPolicy) or the deployment's."""
    own = MatchingPolicy.objects.filter(owner_id=owner_id).values_list("target_fpir", flat=True).first()
    return settings.FACEINDEX_TARGET_FPIR if own is None else float(own)


def match_rule(owner_id: int, *, target_fpir: float | None = None) -> MatchRule:
    """The owner's thresholds now, from how many templates a probe is compared with."""
    target = owner_target_fpir(owner_id) if target_fpir is None else target_fpir
    counts = Template.objects.filter(owner_id=owner_id).aggregate(
        all=Count("id"), bare=Count("id", filter=Q(masked=False)))
    return _rule(target, all_templates=counts["all"], bare_templates=counts["bare"])


def _rule(target_fpir: float, *, all_templates: int, bare_templates: int) -> MatchRule:
    return MatchRule(
        threshold=threshold_for_gallery(bare_templates, target_fpir=target_fpir),
        masked_threshold=threshold_for_gallery(all_templates, target_fpir=target_fpir, masked=True),
        target_fpir=target_fpir, templates=bare_templates, masked_templates=all_templates - bare_templates,
    )


def match_rule_statement(owner_id: int) -> tuple[str, list]:
    """match_rule's reads as one statement (to run with others); read its row with ``match_rule_from_row``."""
    sql = f"""
        SELECT (SELECT p.target_fpir FROM {MatchingPolicy._meta.db_table} p WHERE p.owner_id = %s),
               count(*), count(*) FILTER (WHERE NOT t.masked)
        FROM {Template._meta.db_table} t WHERE t.owner_id = %s
    """
    return sql, [owner_id, owner_id]


def match_rule_from_row(row: tuple) -> MatchRule:
    own_target, all_templates, bare_templates = row
    target = settings.FACEINDEX_TARGET_FPIR if own_target is None else float(own_target)
    return _rule(target, all_templates=all_templates, bare_templates=bare_templates)


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
    embeddings = list(embeddings)
    if not embeddings:
        return []
    sql, params = identity_scores_statement(owner_id, embeddings, probes_masked, k=k)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return identity_scores_from_rows(len(embeddings), cursor.fetchall())


def identity_scores_statement(owner_id: int, embeddings, probes_masked, *, k: int | None = None) -> tuple[str, list]:
    """identity_scores_batch's query (to run with other statements); read its rows with ``identity_scores_from_rows``."""
    k = k or settings.FACEINDEX_MATCH_CANDIDATES
    vectors = [vector_literal(e) for e in embeddings]
    sql = f"""
        SELECT probe.ordinal, nearest.identity_id, nearest.distance
        FROM unnest(%s::int[], %s::text[], %s::bool[]) AS probe(ordinal, embedding, masked)
        CROSS JOIN LATERAL (
            SELECT t.identity_id, t.embedding <=> probe.embedding::{EMBEDDING_SQL_TYPE} AS distance
            FROM {Template._meta.db_table} t
            WHERE t.owner_id = %s AND (probe.masked OR NOT t.masked)
            ORDER BY t.embedding <=> probe.embedding::{EMBEDDING_SQL_TYPE}
            LIMIT %s
        ) AS nearest
    """
    return sql, [list(range(len(vectors))), vectors, [bool(m) for m in probes_masked], owner_id, k]


def identity_scores_from_rows(probes: int, rows) -> list[dict[int, float]]:
    """Best similarity per identity for each probe, from identity_scores_statement's rows."""
    scores: list[dict[int, float]] = [{} for _ in range(probes)]
    for ordinal, identity_id, distance in rows:
        similarity = 1.0 - float(distance)
        if similarity > scores[ordinal].get(identity_id, -2.0):
            scores[ordinal][identity_id] = similarity
    return scores


def decide(scores: dict[int, float], *, rule: MatchRule, probe_masked: bool = False,
           excluded: set[int] = frozenset(), quality: float | None = None) -> Match:
    """The one matching decision: best identity if it reaches the rule's threshold for this probe.

    ``quality``: the face's quality; below FACEINDEX_MATCH_MIN_QUALITY nobody is named (low_quality).
    """
    threshold = rule.threshold_for(probe_masked)
    ranked = sorted(((s, i) for i, s in scores.items() if i not in excluded), reverse=True)
    if not ranked:
        return Match(None, None, low_quality=is_low_quality(quality))
    best_similarity, best_identity = ranked[0]
    runner_up = ranked[1][0] if len(ranked) > 1 else None
    if is_low_quality(quality):
        return Match(None, best_similarity, runner_up, low_quality=True)
    if best_similarity < threshold:
        return Match(None, best_similarity, runner_up)
    if runner_up is not None and runner_up >= threshold and best_similarity - runner_up < settings.FACEINDEX_AMBIGUITY_MARGIN:
        # Two identities fit almost equally well (siblings, twins): leave the
        # face unknown rather than silently merging them.
        return Match(None, best_similarity, runner_up)
    return Match(best_identity, best_similarity, runner_up)


def match_embedding(owner_id: int, embedding: np.ndarray, *, rule: MatchRule | None = None,
                    excluded: set[int] = frozenset(), probe_masked: bool = False, quality: float | None = None) -> Match:
    rule = match_rule(owner_id) if rule is None else rule
    scores = identity_scores(owner_id, embedding, probe_masked=probe_masked)
    return decide(scores, rule=rule, probe_masked=probe_masked, excluded=excluded, quality=quality)
