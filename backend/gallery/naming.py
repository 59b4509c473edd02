"""Naming an unknown-face cluster: it becomes an identity, or joins one.

Its own module because it uses both the clusters (clustering.py) and the
identity services (services.py); neither of those imports the other's caller.
"""
from __future__ import annotations

import numpy as np
from django.db import transaction
from django.utils import timezone

from backend.core.errors import ServiceError

from . import clustering, services
from .models import Face, Identity

# Templates made when a cluster is named: its best-quality faces, not all of
# them (a mis-clustered face as a template would pull in more mistakes).
TEMPLATES_PER_NAMED_CLUSTER = 5


def name_cluster(*, owner, cluster_id: int, name: str | None = None, identity_id: int | None = None) -> Identity:
    """Turn a cluster into a new identity (name) or add it to an existing one (identity_id).

    All its faces are placed on the identity (locked: a user's decision), its
    TEMPLATES_PER_NAMED_CLUSTER best-quality faces become templates, and older
    faces are re-matched against them in the background.
    """
    cluster = clustering.get_cluster(owner=owner, cluster_id=cluster_id)
    if (name is None) == (identity_id is None):
        raise ServiceError("invalid", "give either name (a new identity) or identity_id (an existing one)")
    with transaction.atomic():
        identity = (services.create_identity(owner=owner, name=name) if name is not None
                    else services.get_identity(owner=owner, identity_id=identity_id))
        # A face a user said is not this person stays unknown.
        faces = list(cluster.faces.filter(identity__isnull=True).exclude(rejections__identity=identity).order_by("-quality", "id"))
        if not faces:
            raise ServiceError("invalid", "every face of this cluster was marked as not this person")
        # Only faces good enough for a template, within the identity's template cap.
        best = [f.pk for f in services.faces_fit_for_templates(identity, faces, limit=TEMPLATES_PER_NAMED_CLUSTER)]
        if best:
            services.enroll_from_faces(identity=identity, face_ids=best)
        rest = [f for f in faces if f.pk not in best]
        templates = np.asarray(list(identity.templates.filter(masked=False).values_list("embedding", flat=True)), dtype=np.float32)
        for face in rest:
            similarity = float(np.max(templates @ np.asarray(face.embedding, dtype=np.float32))) if len(templates) else None
            Face.objects.filter(pk=face.pk).update(identity=identity, identity_locked=True, similarity=similarity,
                                                   cluster=None, placed_at=timezone.now())
        cluster.delete()
    return identity
