"""Merge two identities, and undo a merge exactly.

A merge moves the source's templates, faces and "not this person" marks onto
the target, re-matches the faces the larger gallery entry may now claim
(faces that were ambiguous between the two, unknown faces near the source's
templates), and deletes the source row. The Merge row records all of it:
undo re-creates the source with its primary key, name and timestamps, moves
everything back and restores every changed face to its state before the merge,
except faces a user placed after the merge (Face.placed_at): a later decision
about a face outranks an undo of an older one about identities.
"""
from __future__ import annotations

from datetime import datetime

from django.db import transaction

from backend.core.errors import Conflict, NotFound, ServiceError

from . import matching, services
from .models import Face, Identity, Merge, Rejection, Template, UnknownCluster


def merge_identities(*, owner, target_id: int, source_id: int) -> Merge:
    rule = matching.match_rule(owner.pk)
    with transaction.atomic():
        locked = {i.pk: i for i in Identity.objects.select_for_update().filter(owner=owner, pk__in=[target_id, source_id])}
        for identity_id, field in ((target_id, "target_id"), (source_id, "source_id")):
            if int(identity_id) not in locked:
                raise NotFound("not_found", f"identity {identity_id} not found", field=field)
        if int(target_id) == int(source_id):  # checked after ownership: a stranger's id gets a 404
            raise ServiceError("invalid", "cannot merge an identity into itself", field="source_id")
        target, source = locked[int(target_id)], locked[int(source_id)]
        merge = Merge(owner=owner, target=target, source_id=source.pk, source_name=source.name,
                      source_created_at=source.created_at, source_updated_at=source.updated_at)
        merge.template_ids = list(Template.objects.filter(identity=source).order_by("id").values_list("id", flat=True))
        Template.objects.filter(pk__in=merge.template_ids).update(identity=target)

        for rejection in Rejection.objects.filter(identity=source).order_by("id"):
            if Rejection.objects.filter(face_id=rejection.face_id, identity=target).exists():
                merge.dropped_rejections.append([rejection.face_id, rejection.created_at.isoformat()])
                rejection.delete()
            else:
                merge.rejection_ids.append(rejection.pk)
        Rejection.objects.filter(pk__in=merge.rejection_ids).update(identity=target)

        merge.merge_ids = list(Merge.objects.filter(target=source).values_list("id", flat=True))
        Merge.objects.filter(pk__in=merge.merge_ids).update(target=target)

        moved = Face.objects.filter(owner=owner, identity=source)
        merge.face_states = {str(f.pk): services.face_state(f) for f in moved}
        moved.update(identity=target)

        matching.configure_vector_search()
        affected = set(int(i) for i in merge.face_states)
        for template_id in merge.template_ids:
            embedding = Template.objects.values_list("embedding", flat=True).get(pk=template_id)
            affected |= set(Face.objects.filter(pk__in=services.faces_near(owner.pk, embedding, rule.lowest), identity__isnull=True)
                            .values_list("id", flat=True))
        services.rematch_faces(owner.pk, affected, rule=rule, record=merge.face_states)
        source.delete()
        merge.save()
    return merge


def undo_merge(*, owner, merge_id: int) -> Identity:
    """Re-create the merged identity and put back everything the merge changed."""
    with transaction.atomic():
        merge = Merge.objects.select_for_update().filter(owner=owner, pk=merge_id).first()
        if merge is None:
            raise NotFound("not_found", f"merge {merge_id} not found")
        if Identity.objects.filter(pk=merge.source_id).exists():
            raise Conflict("merge_undone", f"identity {merge.source_id} exists already")
        Identity.objects.create(pk=merge.source_id, owner=owner, name=merge.source_name)
        # auto_now / auto_now_add fields are set on save; put the originals back with an update.
        Identity.objects.filter(pk=merge.source_id).update(
            created_at=merge.source_created_at, updated_at=merge.source_updated_at)
        source = Identity.objects.get(pk=merge.source_id)
        Template.objects.filter(pk__in=merge.template_ids, identity=merge.target).update(identity=source)
        Rejection.objects.filter(pk__in=merge.rejection_ids, identity=merge.target).update(identity=source)
        for face_id, created_at in merge.dropped_rejections:
            if Face.objects.filter(pk=face_id).exists():
                rejection = Rejection.objects.create(face_id=face_id, identity=source)
                Rejection.objects.filter(pk=rejection.pk).update(created_at=datetime.fromisoformat(created_at))
        Merge.objects.filter(pk__in=merge.merge_ids, target=merge.target).update(target=source)
        # Faces deleted since (image re-processed or deleted) or placed by a user since are left as they are.
        restorable = set(Face.objects.filter(owner=owner, pk__in=[int(i) for i in merge.face_states])
                         .exclude(placed_at__gt=merge.created_at).values_list("id", flat=True))
        for face_id, (identity_id, similarity, locked, cluster_id) in merge.face_states.items():
            if int(face_id) not in restorable:
                continue
            if cluster_id is not None:
                UnknownCluster.objects.get_or_create(pk=cluster_id, defaults={"owner": owner})
            Face.objects.filter(pk=face_id).update(identity_id=identity_id, similarity=similarity,
                                                   identity_locked=locked, cluster_id=cluster_id)
        merge.delete()
        # Faces indexed after the merge may have matched the target through the
        # source's templates: re-match those against the restored gallery.
        if merge.template_ids:
            services.schedule_rematch(owner.pk, template_ids=list(merge.template_ids))
    return source
