"""The gallery's reactions to other apps' signals (connected in GalleryConfig.ready)."""
from backend.jobs.signals import faces_indexed

from . import services


def cluster_unknown_faces(sender, *, owner_id: int, unknown_face_ids: list[int], **_) -> None:
    services.on_faces_indexed(owner_id, unknown_face_ids)


def connect() -> None:
    faces_indexed.connect(cluster_unknown_faces, dispatch_uid="gallery.cluster_unknown_faces")
