"""Thin Celery tasks of the gallery (identities, unknown-face clusters)."""
from celery import shared_task


@shared_task(name="faceindex.cluster_faces", acks_late=True)
def cluster_faces(owner_id: int, face_ids: list[int] | None = None) -> int:
    """Cluster the given unknown faces, then any others clustering has not seen yet."""
    from backend.gallery import clustering

    done = clustering.cluster_faces(owner_id, face_ids or [])
    return done + clustering.cluster_pending(owner_id)
