"""Incremental clustering of unknown faces over pgvector neighbours.

Rule, applied to each new unknown face f (in id order):
1. take f's NEIGHBOURS nearest unknown faces of the same owner (HNSW, cosine),
   not from f's own image (two faces in one photo are two people), and keep
   those with similarity >= SIMILARITY;
2. no neighbour: f stays alone (no cluster; a later face may pull it in);
3. f joins the cluster with the most links to it (ties: the larger, then the
   older cluster); neighbours in no cluster join it too; neighbours in no
   cluster and f with no clustered neighbour start a new cluster;
4. any other linked cluster is merged into f's cluster (union-find union by
   size: the smaller cluster's faces are re-labelled) only when f has at least
   MERGE_LINKS links into it, so one borderline face cannot chain two
   people together.

Why these numbers: SIMILARITY = 0.45 is stricter than the matching threshold
(0.375, FAR 1e-3 in weights/manifest.toml) because single-linkage errors
compound along chains. On dev-faces (62 faces, 13 people; this rule replayed
over 20 random arrival orders) 0.45-0.55 with MERGE_LINKS = 2 gave BCubed F1
1.000; 0.40 gave 0.991 and 0.375 gave 0.981 (0.963 with MERGE_LINKS = 1): two
people chained together. NEIGHBOURS = 10 bounds the work per face (one HNSW
query) and is ample for the links rule.

A cluster has at least two faces; clusters that shrink below that (faces
matched, named, deleted) are dissolved by prune_clusters. Clustering of one
owner is serialised by a transaction-scoped advisory lock, so concurrent
workers cannot build two clusters for one person.
"""
from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from backend.core.errors import NotFound

from backend.core import statements

from . import matching
from .models import Face, UnknownCluster

# Declared, with their defaults, in backend/config/settings.py.
SIMILARITY = settings.FACEINDEX_CLUSTER_SIMILARITY
NEIGHBOURS = settings.FACEINDEX_CLUSTER_NEIGHBOURS
MERGE_LINKS = settings.FACEINDEX_CLUSTER_MERGE_LINKS
_LOCK_NAMESPACE = 0x4641_4345  # "FACE": advisory lock key 1; key 2 is the owner id


def _lock_owner_statement(owner_id: int) -> tuple[str, list]:
    return "SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, int(owner_id) % 2**31]


def _lock_owner(owner_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*_lock_owner_statement(owner_id))


def _neighbourhood_statement(owner_id: int, face_ids: list[int], *, similarity: float, k: int) -> tuple[str, list]:
    """The given faces clustering has not seen yet, their neighbours (module rule 1), and cluster sizes, as one statement.

    One row of two JSON values: [[face, its cluster, neighbour or null,
    neighbour's cluster], ...] and {cluster: faces} for every cluster named.
    A LATERAL join runs one K-nearest scan of the face index per face. Which
    faces are neighbours does not depend on clusters, so the whole run's
    neighbours can be read before any face is placed. Run it under the
    owner's lock: a concurrent run may have placed the faces already.
    """
    table = Face._meta.db_table
    sql = f"""
        WITH probe AS (
            SELECT id, cluster_id, image_id, embedding FROM {table}
            WHERE owner_id = %s AND id = ANY(%s) AND identity_id IS NULL AND NOT cluster_checked
        ), linked AS (
            SELECT probe.id, probe.cluster_id, near.id AS near_id, near.cluster_id AS near_cluster
            FROM probe
            LEFT JOIN LATERAL (
                SELECT other.id, other.cluster_id, other.embedding <=> probe.embedding AS distance
                FROM {table} other
                WHERE other.owner_id = %s AND other.identity_id IS NULL
                  AND other.id <> probe.id AND other.image_id <> probe.image_id
                ORDER BY other.embedding <=> probe.embedding
                LIMIT %s
            ) AS near ON near.distance <= %s
        ), named AS (
            SELECT cluster_id FROM linked WHERE cluster_id IS NOT NULL
            UNION SELECT near_cluster FROM linked WHERE near_cluster IS NOT NULL
        )
        SELECT (SELECT coalesce(json_agg(json_build_array(id, cluster_id, near_id, near_cluster) ORDER BY id, near_id), '[]')
                FROM linked),
               (SELECT coalesce(json_object_agg(cluster_id, n), '{{}}') FROM (
                    SELECT cluster_id, count(*) AS n FROM {table}
                    WHERE cluster_id IN (SELECT cluster_id FROM named) GROUP BY cluster_id) AS sizes)
    """
    return sql, [owner_id, face_ids, owner_id, k, 1.0 - similarity]


def cluster_faces(owner_id: int, face_ids, *, similarity: float = SIMILARITY, k: int = NEIGHBOURS,
                  merge_links: int = MERGE_LINKS) -> int:
    """Place each given unknown face that clustering has not seen yet into a cluster (module rule); returns faces clustered.

    Two or three round trips and the commit, whatever the number of faces:
    the lock, the faces, their neighbours and the cluster sizes are read
    together; clusters are tracked in memory while the faces are placed in id
    order; new clusters are inserted at once (if any), then every placement,
    merge and mark is written together (core/statements.py says why).
    """
    face_ids = sorted(set(int(i) for i in face_ids or []))
    if not face_ids:
        return 0
    clustered = 0
    with transaction.atomic():
        settings_sql = matching.vector_search_settings()
        (linked, sizes), = statements.run_together(
            [_lock_owner_statement(owner_id)] + [(sql, []) for sql in settings_sql]
            + [_neighbourhood_statement(owner_id, face_ids, similarity=similarity, k=k)])[-1]
        neighbours: dict[int, list[int]] = {}
        cluster_of: dict[int, int | None] = {}
        for face_id, cluster_id, near_id, near_cluster in linked:
            neighbours.setdefault(face_id, [])
            cluster_of[face_id] = cluster_id
            if near_id is not None:
                neighbours[face_id].append(near_id)
                cluster_of[near_id] = near_cluster
        face_ids = sorted(neighbours)  # the given faces still unseen, checked under the lock
        if not face_ids:
            return 0
        initial = dict(cluster_of)
        sizes = Counter({int(c): n for c, n in sizes.items()})  # kept up to date in memory
        touched: set[int] = set()
        new_clusters = 0  # created in memory with ids -1, -2, ...; inserted at the end
        merges: list[tuple[int, int]] = []  # (from, into), in order

        for face_id in face_ids:
            near = [(n, cluster_of.get(n)) for n in neighbours[face_id]]
            if not near:
                continue
            own = cluster_of.get(face_id)  # an earlier face may have pulled it in
            links = Counter(c for _, c in near if c is not None)
            if own is not None:
                links[own] += len(near) + 1  # its own cluster wins
            if links:
                # Ties: the larger, then the older cluster (new ones, negative here, are the newest).
                ranked = sorted(links, key=lambda c: (-links[c], -sizes[c], c if c > 0 else 2**62 - c))
                cluster_id = ranked[0]
                for other in ranked[1:]:
                    if links[other] >= merge_links:
                        sizes[cluster_id] += sizes.pop(other, 0)
                        merges.append((other, cluster_id))
                        for member, c in cluster_of.items():
                            if c == other:
                                cluster_of[member] = cluster_id
                        touched.discard(other)
            else:
                new_clusters += 1
                cluster_id = -new_clusters
                sizes[cluster_id] = 0
            joining = {n for n, c in near if c is None}
            if own != cluster_id:
                joining.add(face_id)
            sizes[cluster_id] += len(joining)
            for member in joining:
                cluster_of[member] = cluster_id
            touched.add(cluster_id)
            clustered += 1
        real = {}
        if new_clusters:
            created = UnknownCluster.objects.bulk_create([UnknownCluster(owner_id=owner_id) for _ in range(new_clusters)])
            real = {-(i + 1): cluster.pk for i, cluster in enumerate(created)}
        statements.run_together(_placement_statements(
            face_ids, {m: real.get(c, c) for m, c in cluster_of.items() if c != initial.get(m)},
            [(real.get(a, a), real.get(b, b)) for a, b in merges], {real.get(c, c) for c in touched}))
    return clustered


def _placement_statements(face_ids: list[int], moved: dict[int, int], merges: list[tuple[int, int]],
                          touched: set[int]) -> list[tuple[str, list]]:
    """cluster_faces' writes, in order: merges (a cluster's faces move, then it goes), placements, marks."""
    faces, clusters = Face._meta.db_table, UnknownCluster._meta.db_table
    writes = []
    for old, into in merges:
        writes.append((f"UPDATE {faces} SET cluster_id = %s WHERE cluster_id = %s", [into, old]))
        writes.append((f"DELETE FROM {clusters} WHERE id = %s", [old]))
    if moved:
        members = sorted(moved)
        writes.append((f"UPDATE {faces} AS f SET cluster_id = m.cluster_id "
                       "FROM unnest(%s::bigint[], %s::bigint[]) AS m(id, cluster_id) WHERE f.id = m.id",
                       [members, [moved[m] for m in members]]))
    writes.append((f"UPDATE {faces} SET cluster_checked = true WHERE id = ANY(%s)", [face_ids]))
    writes.append((f"UPDATE {clusters} SET updated_at = %s WHERE id = ANY(%s)", [timezone.now(), sorted(touched)]))
    return writes


def cluster_pending(owner_id: int, *, limit: int = 5000, also: list[int] = ()) -> int:
    """Cluster unknown faces clustering has not seen yet (a missed hook, faces made unknown), bounded; ``also``: these too."""
    pending = list(Face.objects.filter(owner_id=owner_id, identity__isnull=True, cluster_checked=False)
                   .order_by("id").values_list("id", flat=True)[:limit])
    return cluster_faces(owner_id, [*pending, *also])


def prune_clusters(owner_id: int) -> int:
    """Dissolve clusters left with fewer than two unknown faces; faces that got an identity leave theirs."""
    Face.objects.filter(owner_id=owner_id, identity__isnull=False, cluster__isnull=False).update(cluster=None)
    small = list(
        UnknownCluster.objects.filter(owner_id=owner_id).annotate(n=Count("faces")).filter(n__lt=2).values_list("id", flat=True)
    )
    if small:
        Face.objects.filter(cluster_id__in=small).update(cluster=None)
        UnknownCluster.objects.filter(pk__in=small).delete()
    return len(small)


def get_cluster(*, owner, cluster_id: int) -> UnknownCluster:
    cluster = UnknownCluster.objects.filter(owner=owner, pk=cluster_id).first()
    if cluster is None:
        raise NotFound("not_found", f"cluster {cluster_id} not found")
    return cluster


def clusters_for(owner):
    """An owner's clusters, largest first, with `size`."""
    return UnknownCluster.objects.filter(owner=owner).annotate(size=Count("faces")).filter(size__gte=2).order_by("-size", "id")


def sample_faces(cluster: UnknownCluster, n: int = 4) -> list[Face]:
    return list(cluster.faces.order_by("-quality", "id")[:n])


def remove_from_cluster(*, owner, cluster_id: int, face_id: int) -> Face:
    """A user says this face does not belong with the others: it leaves the cluster.

    It stays unknown and counts as clustered (cluster_checked), so the
    catch-up pass does not put it straight back; a cluster left with one
    face is dissolved.
    """
    cluster = get_cluster(owner=owner, cluster_id=cluster_id)
    with transaction.atomic():
        _lock_owner(owner.pk)
        face = Face.objects.filter(owner=owner, pk=face_id, cluster=cluster).first()
        if face is None:
            raise NotFound("not_found", f"face {face_id} is not in cluster {cluster_id}")
        Face.objects.filter(pk=face.pk).update(cluster=None, cluster_checked=True)
        prune_clusters(owner.pk)
    face.refresh_from_db()
    return face
