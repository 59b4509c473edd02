"""Embedding storage (halfvec): the owner-filtered nearest-neighbour queries use the HNSW
indexes, and half precision leaves the matching decisions of real faces unchanged."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from backend.gallery import clustering, matching, services
from backend.gallery.models import Face, Identity, Template
from backend.jobs.models import Image, Job

pytestmark = pytest.mark.django_db(transaction=True)


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def captured_statements(call) -> list[tuple[str, tuple]]:
    """The SQL statements (with parameters) a call runs, as the database saw them."""
    seen = []

    def record(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        call()
    return seen


def plan(sql: str, params) -> str:
    """EXPLAIN of a statement with sequential scans and sorts priced out: with a few test rows the
    planner would scan the table, so this asks whether the HNSW index CAN serve the query (types match)."""
    with transaction.atomic(), connection.cursor() as cursor:
        matching.configure_vector_search()
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def gallery(owner, vectors: np.ndarray) -> list[Face]:
    identity = Identity.objects.create(owner=owner, name="someone")
    for v in vectors[:5]:
        Template.objects.create(owner=owner, identity=identity, embedding=v)
    job = Job.objects.create(owner=owner)
    image = Image.objects.create(owner=owner, job=job, object_key="k", size_bytes=1)
    return [Face.objects.create(owner=owner, image=image, ordinal=i, box_x=0, box_y=0, box_w=1, box_h=1, landmarks=[],
                                det_score=1.0, embedding=v) for i, v in enumerate(vectors)]


def test_owner_filtered_nearest_neighbour_queries_use_the_hnsw_indexes():
    owner = get_user_model().objects.create_user("storage-owner", password="x")
    vectors = unit_vectors(20)
    faces = gallery(owner, vectors)

    def only_plan(call, table: str) -> str:
        statements = [s for s in captured_statements(call) if "<=>" in s[0] and table in s[0]]
        assert len(statements) == 1, statements
        return plan(*statements[0])

    # The batch matching query (LATERAL join over the probes' embeddings).
    assert "template_embedding_hnsw" in only_plan(
        lambda: matching.identity_scores_batch(owner.pk, vectors[:3], [False] * 3), "gallery_template")
    # The ORM queries (CosineDistance with a numpy probe) and clustering's neighbours.
    assert "face_embedding_hnsw" in only_plan(lambda: services.faces_near(owner.pk, vectors[0], 0.3), "gallery_face")
    # (clustering sends its neighbours query together with other statements: planned on its own)
    assert "face_embedding_hnsw" in plan(*clustering._neighbourhood_statement(owner.pk, [faces[0].pk], similarity=0.3, k=5))

    # The check can fail: ordering by a cast of the column (not of the probe) cannot use the index.
    sql, params = [s for s in captured_statements(
        lambda: matching.identity_scores_batch(owner.pk, vectors[:3], [False] * 3)) if "<=>" in s[0]][0]
    assert "template_embedding_hnsw" not in plan(sql.replace("t.embedding <=>", "t.embedding::vector(128) <=>"), params)


def test_half_precision_storage_keeps_the_matching_decisions_of_real_faces(pipeline, sample_archive):
    photos = sorted(p for p in sample_archive.enroll_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos += sorted(p for p in sample_archive.archive_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    embeddings = np.asarray([f.embedding for p in photos for f in pipeline.process(cv2.imread(str(p)))], np.float32)
    assert len(embeddings) >= 20

    owner = get_user_model().objects.create_user("half-owner", password="x")
    identities = [Identity.objects.create(owner=owner, name=f"p{i}") for i in range(len(embeddings))]
    Template.objects.bulk_create([Template(owner=owner, identity=identity, embedding=e)
                                  for identity, e in zip(identities, embeddings)])
    stored = np.asarray([Template.objects.get(identity=identity).embedding for identity in identities], np.float32)
    assert np.abs(stored - embeddings).max() < 1e-3

    # Every probe against every template, scored by the database on the halfvec column.
    with transaction.atomic():
        matching.configure_vector_search()
        scores = matching.identity_scores_batch(owner.pk, embeddings, [False] * len(embeddings), k=len(embeddings))
    exact = embeddings @ embeddings.T  # float32 cosine (SFace embeddings are unit vectors)
    threshold = pipeline.threshold
    changes, flips, same_and_different = [], 0, [0, 0]
    for row, probe_scores in enumerate(scores):
        assert len(probe_scores) == len(embeddings)  # exact top-k: all templates came back
        for column, identity in enumerate(identities):
            half = probe_scores[identity.pk]
            changes.append(abs(half - float(exact[row, column])))
            flips += (half >= threshold) != (exact[row, column] >= threshold)
            same_and_different[int(exact[row, column] >= threshold)] += 1
    assert max(changes) < 2e-3
    assert flips == 0
    assert min(same_and_different) > 0  # both sides of the threshold were exercised


def test_halfvec_migration_keeps_the_stored_embeddings():
    from django.db.migrations.executor import MigrationExecutor

    owner = get_user_model().objects.create_user("migrated-owner", password="x")
    vectors = unit_vectors(6, seed=1)
    before, after = [("gallery", "0007_matching_policy")], [("gallery", "0008_halfvec_embeddings")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'gallery_face'::regclass AND attname = 'embedding'")
            assert cursor.fetchone()[0] == "vector(128)"
            identity = Identity.objects.create(owner=owner, name="kept")
            job = Job.objects.create(owner=owner)
            image = Image.objects.create(owner=owner, job=job, object_key="k", size_bytes=1)
            for i, v in enumerate(vectors):
                text = "[" + ",".join(f"{x:.9g}" for x in v) + "]"
                cursor.execute("INSERT INTO gallery_face (owner_id, image_id, ordinal, box_x, box_y, box_w, box_h, landmarks, "
                               "det_score, quality, embedding, identity_locked, manual, cluster_checked, mask_state, sex, "
                               "crop_key, created_at) VALUES (%s, %s, %s, 0, 0, 1, 1, '[]', 1, 0, %s::vector, false, false, "
                               "false, '', '', '', now())", [owner.pk, image.pk, i, text])
                cursor.execute("INSERT INTO gallery_template (owner_id, identity_id, embedding, crop_key, source_key, quality, "
                               "masked, created_at) VALUES (%s, %s, %s::vector, '', '', 0, false, now())",
                               [owner.pk, identity.pk, text])
    finally:
        MigrationExecutor(connection).migrate(after)

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE '%%embedding_hnsw'")
        indexes = dict(cursor.fetchall())
    assert set(indexes) == {"face_embedding_hnsw", "template_embedding_hnsw"}
    assert all("halfvec_cosine_ops" in d and "ef_construction='128'" in d for d in indexes.values()), indexes
    faces = np.asarray(Face.objects.filter(owner=owner).order_by("ordinal").values_list("embedding", flat=True), np.float32)
    templates = np.asarray(Template.objects.filter(owner=owner).order_by("id").values_list("embedding", flat=True), np.float32)
    assert faces.shape == templates.shape == vectors.shape
    assert np.abs(faces - vectors).max() < 1e-3 and np.abs(templates - vectors).max() < 1e-3
