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

from . import matching
from .models import Face, UnknownCluster

# Declared, with their defaults, in backend/config/settings.py.
SIMILARITY = settings.FACEINDEX_CLUSTER_SIMILARITY
NEIGHBOURS = settings.FACEINDEX_CLUSTER_NEIGHBOURS
MERGE_LINKS = settings.FACEINDEX_CLUSTER_MERGE_LINKS
_LOCK_NAMESPACE = 0x4641_4345  # "FACE": advisory lock key 1; key 2 is the owner id


def _lock_owner(owner_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, int(owner_id) % 2**31])


def _neighbours(owner_id: int, face_ids: list[int], *, similarity: float, k: int) -> dict[int, list[int]]:
    """Each face's nearest unknown faces of the owner (module rule 1), in one query.

    A LATERAL join runs one K-nearest scan of the face index per face. Which
    faces are neighbours does not depend on clusters, so the whole run's
    neighbours can be read before any face is placed.
    """
    table = Face._meta.db_table
    sql = f"""
        SELECT probe.id, near.id
        FROM {table} probe
        CROSS JOIN LATERAL (
            SELECT other.id, other.embedding <=> probe.embedding AS distance
            FROM {table} other
            WHERE other.owner_id = probe.owner_id AND other.identity_id IS NULL
              AND other.id <> probe.id AND other.image_id <> probe.image_id
            ORDER BY other.embedding <=> probe.embedding
            LIMIT %s
        ) AS near
        WHERE probe.owner_id = %s AND probe.id = ANY(%s) AND near.distance <= %s
    """
    found: dict[int, list[int]] = {face_id: [] for face_id in face_ids}
    with connection.cursor() as cursor:
        cursor.execute(sql, [k, owner_id, face_ids, 1.0 - similarity])
        for face_id, neighbour_id in cursor.fetchall():
            found[face_id].append(neighbour_id)
    return found


def cluster_faces(owner_id: int, face_ids, *, similarity: float = SIMILARITY, k: int = NEIGHBOURS,
                  merge_links: int = MERGE_LINKS) -> int:
    """Place each given unknown face that clustering has not seen yet into a cluster (module rule); returns faces clustered.

    A few statements per call, not per face: the neighbours come from one
    query, clusters are tracked in memory while the faces are placed in id
    order, and the placements are written together at the end.
    """
    face_ids = sorted(set(int(i) for i in face_ids or []))
    if not face_ids:
        return 0
    clustered = 0
    with transaction.atomic():
        _lock_owner(owner_id)
        # Checked under the lock: a concurrent call may have placed them already.
        face_ids = list(Face.objects.filter(owner_id=owner_id, pk__in=face_ids, identity__isnull=True,
                                            cluster_checked=False).order_by("id").values_list("id", flat=True))
        if not face_ids:
            return 0
        matching.configure_vector_search()
        neighbours = _neighbours(owner_id, face_ids, similarity=similarity, k=k)
        involved = set(face_ids) | {n for ids in neighbours.values() for n in ids}
        cluster_of: dict[int, int | None] = dict(Face.objects.filter(pk__in=involved).values_list("id", "cluster_id"))
        initial = dict(cluster_of)
        # Sizes of the clusters this run can touch, in one query; kept up to date in memory.
        sizes = Counter(dict(Face.objects.filter(cluster_id__in={c for c in cluster_of.values() if c is not None})
                             .values_list("cluster_id").annotate(n=Count("id")).values_list("cluster_id", "n")))
        touched: set[int] = set()

        for face_id in face_ids:
            near = [(n, cluster_of.get(n)) for n in neighbours[face_id]]
            if not near:
                continue
            own = cluster_of.get(face_id)  # an earlier face may have pulled it in
            links = Counter(c for _, c in near if c is not None)
            if own is not None:
                links[own] += len(near) + 1  # its own cluster wins
            if links:
                ranked = sorted(links, key=lambda c: (-links[c], -sizes[c], c))
                cluster_id = ranked[0]
                for other in ranked[1:]:
                    if links[other] >= merge_links:
                        sizes[cluster_id] += sizes.pop(other, 0)
                        # Faces outside this run move in the database now, the run's own in memory.
                        Face.objects.filter(cluster_id=other).exclude(pk__in=involved).update(cluster_id=cluster_id)
                        for member, c in cluster_of.items():
                            if c == other:
                                cluster_of[member] = cluster_id
                        touched.discard(other)
                        UnknownCluster.objects.filter(pk=other).delete()
            else:
                cluster_id = UnknownCluster.objects.create(owner_id=owner_id).pk
                sizes[cluster_id] = 0
            joining = {n for n, c in near if c is None}
            if own != cluster_id:
                joining.add(face_id)
            sizes[cluster_id] += len(joining)
            for member in joining:
                cluster_of[member] = cluster_id
            touched.add(cluster_id)
            clustered += 1
        moved: dict[int, list[int]] = {}
        for member, c in cluster_of.items():
            if c != initial.get(member):
                moved.setdefault(c, []).append(member)
        for cluster_id, members in moved.items():
            Face.objects.filter(pk__in=members).update(cluster_id=cluster_id)
        Face.objects.filter(pk__in=face_ids).update(cluster_checked=True)
        UnknownCluster.objects.filter(pk__in=touched).update(updated_at=timezone.now())
    return clustered


def cluster_pending(owner_id: int, *, limit: int = 5000) -> int:
    """Cluster unknown faces clustering has not seen yet (a missed hook, faces made unknown); bounded."""
    pending = list(Face.objects.filter(owner_id=owner_id, identity__isnull=True, cluster_checked=False)
                   .order_by("id").values_list("id", flat=True)[:limit])
    return cluster_faces(owner_id, pending)


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
