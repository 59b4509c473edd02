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

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone
from pgvector.django import CosineDistance

from backend.core.errors import NotFound, ServiceError

from . import matching
from .models import Face, Identity, UnknownCluster

SIMILARITY = float(getattr(settings, "FACEINDEX_CLUSTER_SIMILARITY", 0.45))
NEIGHBOURS = int(getattr(settings, "FACEINDEX_CLUSTER_NEIGHBOURS", 10))
MERGE_LINKS = int(getattr(settings, "FACEINDEX_CLUSTER_MERGE_LINKS", 2))
# Templates made when a cluster is named: its best-quality faces, not all of
# them (a mis-clustered face as a template would pull in more mistakes).
TEMPLATES_PER_NAMED_CLUSTER = 5
_LOCK_NAMESPACE = 0x4641_4345  # "FACE": advisory lock key 1; key 2 is the owner id


def _lock_owner(owner_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, int(owner_id) % 2**31])


def _neighbours(face: Face, *, similarity: float, k: int) -> list[tuple[int, int | None]]:
    rows = (
        Face.objects.filter(owner_id=face.owner_id, identity__isnull=True)
        .exclude(pk=face.pk)
        .exclude(image_id=face.image_id)
        .annotate(distance=CosineDistance("embedding", face.embedding))
        .order_by("distance")
        .values_list("id", "cluster_id", "distance")[:k]
    )
    return [(face_id, cluster_id) for face_id, cluster_id, distance in rows if 1.0 - distance >= similarity]


def cluster_faces(owner_id: int, face_ids, *, similarity: float = SIMILARITY, k: int = NEIGHBOURS,
                  merge_links: int = MERGE_LINKS) -> int:
    """Place each given unknown face into a cluster (see module rule); returns faces clustered."""
    face_ids = sorted(set(int(i) for i in face_ids or []))
    if not face_ids:
        return 0
    clustered = 0
    with transaction.atomic():
        _lock_owner(owner_id)
        matching.configure_vector_search()
        sizes = Counter()

        def size(cluster_id: int) -> int:
            if cluster_id not in sizes:
                sizes[cluster_id] = Face.objects.filter(cluster_id=cluster_id).count()
            return sizes[cluster_id]

        for face in Face.objects.filter(owner_id=owner_id, pk__in=face_ids, identity__isnull=True).order_by("id"):
            face.refresh_from_db(fields=["cluster_id"])  # an earlier face may have pulled it in
            neighbours = _neighbours(face, similarity=similarity, k=k)
            Face.objects.filter(pk=face.pk).update(cluster_checked=True)
            if not neighbours:
                continue
            links = Counter(c for _, c in neighbours if c is not None)
            if face.cluster_id is not None:
                links[face.cluster_id] += len(neighbours) + 1  # its own cluster wins
            if links:
                ranked = sorted(links, key=lambda c: (-links[c], -size(c), c))
                cluster_id = ranked[0]
                for other in ranked[1:]:
                    if links[other] >= merge_links:
                        moved = Face.objects.filter(cluster_id=other).update(cluster_id=cluster_id)
                        sizes[cluster_id] = size(cluster_id) + moved
                        sizes.pop(other, None)
                        UnknownCluster.objects.filter(pk=other).delete()
            else:
                cluster_id = UnknownCluster.objects.create(owner_id=owner_id).pk
                sizes[cluster_id] = 0
            joining = {face.pk} | {i for i, c in neighbours if c is None}
            if face.cluster_id == cluster_id:
                joining.discard(face.pk)
            Face.objects.filter(pk__in=joining).update(cluster_id=cluster_id)
            sizes[cluster_id] = size(cluster_id) + len(joining)
            UnknownCluster.objects.filter(pk=cluster_id).update(updated_at=timezone.now())
            clustered += 1
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


def name_cluster(*, owner, cluster_id: int, name: str | None = None, identity_id: int | None = None) -> Identity:
    """Turn a cluster into a new identity (name) or add it to an existing one (identity_id).

    All its faces are placed on the identity (locked: a user's decision), its
    TEMPLATES_PER_NAMED_CLUSTER best-quality faces become templates, and older
    faces are re-matched against them in the background.
    """
    from . import services

    cluster = get_cluster(owner=owner, cluster_id=cluster_id)
    if (name is None) == (identity_id is None):
        raise ServiceError("invalid", "give either name (a new identity) or identity_id (an existing one)")
    with transaction.atomic():
        identity = (services.create_identity(owner=owner, name=name) if name is not None
                    else services.get_identity(owner=owner, identity_id=identity_id))
        # A face a user said is not this person stays unknown.
        faces = list(cluster.faces.filter(identity__isnull=True).exclude(rejections__identity=identity).order_by("-quality", "id"))
        if not faces:
            raise ServiceError("invalid", "every face of this cluster was marked as not this person")
        best = [f.pk for f in faces[:TEMPLATES_PER_NAMED_CLUSTER]]
        services.enroll_from_faces(identity=identity, face_ids=best)
        rest = faces[TEMPLATES_PER_NAMED_CLUSTER:]
        templates = np.asarray(list(identity.templates.filter(masked=False).values_list("embedding", flat=True)), dtype=np.float32)
        for face in rest:
            similarity = float(np.max(templates @ np.asarray(face.embedding, dtype=np.float32)))
            Face.objects.filter(pk=face.pk).update(identity=identity, identity_locked=True, similarity=similarity,
                                                   cluster=None, placed_at=timezone.now())
        cluster.delete()
    return identity
