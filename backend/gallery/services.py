"""Gallery business logic: identities, enrollment, corrections, re-matching.

Merges live in merging.py, unknown-face clusters in clustering.py, 1:1 / 1:N
queries in search.py.
"""
from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import cv2
import numpy as np
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from pgvector.django import CosineDistance

from backend.core import outages, storage
from backend.core.errors import NotFound, ServiceError
from backend.core.pipeline import encode_jpeg, get_pipeline
from backend.core.uploads import Upload
from backend.jobs import originals
from backend.jobs.ingest import iter_upload
from backend.jobs.models import Image
from ml.decode import decode_image
from ml.errors import ImageDecodeError

from . import clustering, matching
from .attributes import describe_faces, is_masked, masked_template_embedding
from .models import Enrollment, Face, Identity, MatchingPolicy, Rejection, Template

log = logging.getLogger(__name__)


@dataclass
class EnrollResult:
    name: str
    template_id: int | None = None
    error: dict | None = None
    faces_found: int = 0
    box: list[float] | None = None  # the enrolled face
    ignored_boxes: list[list[float]] = field(default_factory=list)  # other faces in the photo, not enrolled


@dataclass
class EnrollSummary:
    identity: Identity
    results: list[EnrollResult] = field(default_factory=list)

    @property
    def enrolled(self) -> int:
        return sum(1 for r in self.results if r.template_id)


def get_identity(*, owner, identity_id: int) -> Identity:
    identity = Identity.objects.filter(owner=owner, pk=identity_id).first()
    if identity is None:
        raise NotFound("not_found", f"identity {identity_id} not found")
    return identity


def get_face(*, owner, face_id: int) -> Face:
    face = Face.objects.filter(owner=owner, pk=face_id).first()
    if face is None:
        raise NotFound("not_found", f"face {face_id} not found")
    return face


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError("invalid", "name must not be empty", field="name")
    return name


def create_identity(*, owner, name: str) -> Identity:
    identity = Identity(owner=owner, name=_clean_name(name))
    identity.full_clean()
    identity.save()
    return identity


def rename_identity(*, identity: Identity, name: str) -> Identity:
    identity.name = _clean_name(name)
    identity.full_clean()
    identity.save(update_fields=["name", "updated_at"])
    return identity


def _template_crop_key(identity: Identity) -> str:
    return f"{identity.owner_id}/templates/{identity.pk}/{uuid.uuid4().hex}.jpg"


def _enroll_blob(identity: Identity, name: str, sha256: str, data: bytes, *,
                 box=None) -> tuple[EnrollResult, list[int]]:
    """One image's subject into one template (and its masked companion); returns the result and new template ids.

    The subject is the dominant face (ml.subject); other faces are ignored and
    reported. A photo where no face dominates is refused with the boxes found;
    ``box`` (x, y, w, h) picks the face to enroll instead (a detected face it
    overlaps, else the face inside the box, as when tagging a missed face).
    """
    result = EnrollResult(name)
    source_key = f"sha256:{sha256}"
    existing = Template.objects.filter(identity=identity, source_key=source_key, masked=False).first()
    if existing is not None and box is None:  # re-enrolling the same photo adds nothing
        result.template_id, result.faces_found = existing.pk, 1
        return result, []
    try:
        decoded = decode_image(data, max_pixels=settings.FACEINDEX_MAX_PIXELS)
    except ImageDecodeError as exc:
        result.error = {"code": exc.code, "message": str(exc)}
        return result, []
    pipeline = get_pipeline()
    faces = pipeline.process(decoded.pixels)
    result.faces_found = len(faces)
    face = _enrollment_face(pipeline, decoded, faces, box, result)
    if face is None:
        return result, []
    if existing is not None and _same_face(existing, face):
        result.template_id = existing.pk
        return result, []
    if (refusal := template_refusal(identity, face.quality)) is not None:
        result.error = refusal.as_error()
        return result, []
    key = _template_crop_key(identity)
    storage.put_bytes(key, encode_jpeg(face.crop), "image/jpeg")
    created = create_templates(identity, embedding=face.embedding, crop=face.crop, crop_key=key,
                               source_key=source_key, quality=face.quality)
    result.template_id = created[0].pk
    return result, [t.pk for t in created]


def _enroll_blobs(identity: Identity, blobs, *, box=None) -> EnrollSummary:
    summary = EnrollSummary(identity)
    new_template_ids: list[int] = []
    for blob in blobs:
        result, created = _enroll_blob(identity, blob.name, blob.sha256, blob.data, box=box)
        summary.results.append(result)
        new_template_ids += created
    if new_template_ids:
        schedule_rematch(identity.owner_id, template_ids=new_template_ids)
    return summary


def enroll_from_uploads(*, identity: Identity, uploads: list[Upload], box=None) -> EnrollSummary:
    """Add one template per upload: its subject (see _enroll_blob); ``box`` only with one photo."""
    blobs = (blob for upload in uploads for blob in iter_upload(upload.name, upload.fileobj, upload.size))
    box = _enroll_box(box)
    if box is not None:
        blobs = _one_photo(blobs)
    return _enroll_blobs(identity, blobs, box=box)


def _one_photo(blobs) -> list:
    blobs = list(itertools.islice(blobs, 2))
    if len(blobs) != 1:
        raise ServiceError("invalid", "box picks a face in one photo; send exactly one photo with it", field="box")
    return blobs


def enroll(*, identity: Identity, uploads: list[Upload], box=None) -> EnrollSummary | Enrollment:
    """Enroll in this request when the uploads hold at most FACEINDEX_ENROLL_SYNC_MAX_FILES
    images; otherwise store them and return a background Enrollment (progress: GET /enrollments/{id})."""
    limit = settings.FACEINDEX_ENROLL_SYNC_MAX_FILES
    blobs = (blob for upload in uploads for blob in iter_upload(upload.name, upload.fileobj, upload.size))
    box = _enroll_box(box)
    if box is not None:
        return _enroll_blobs(identity, _one_photo(blobs), box=box)
    first = []
    for blob in blobs:
        first.append(blob)
        if len(first) > limit:
            break
    if len(first) <= limit:
        return _enroll_blobs(identity, first)
    # Too many for one request: every image to storage first (nothing in the database
    # until all were read), then a record the worker fills in.
    storage.ensure_bucket()
    files = []
    for blob in itertools.chain(first, blobs):
        key = originals.original_key(identity.owner_id, blob)
        storage.put_bytes(key, blob.data)
        files.append({"name": blob.name, "key": key, "sha256": blob.sha256})
    enrollment = Enrollment.objects.create(owner_id=identity.owner_id, identity=identity, files=files)
    transaction.on_commit(lambda: send_enrollment(enrollment.pk))
    return enrollment


def send_enrollment(enrollment_id: int) -> None:
    """Hand the enrollment to a worker; with the broker down it stays in the outbox (queued_at unset)."""
    try:
        current_app.send_task("faceindex.run_enrollment", args=[enrollment_id])
    except Exception as exc:
        if not outages.is_outage(exc):
            raise
        log.warning("broker unreachable: enrollment %s waits in the outbox", enrollment_id)
        return
    Enrollment.objects.filter(pk=enrollment_id).update(queued_at=timezone.now())


def send_enrollment_outbox(*, min_age_s: float) -> int:
    """Send enrollments whose first send failed (see send_enrollment)."""
    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    ids = list(Enrollment.objects.filter(status=Enrollment.Status.PENDING, queued_at__isnull=True,
                                         created_at__lt=cutoff).values_list("id", flat=True)[:1000])
    for enrollment_id in ids:
        send_enrollment(enrollment_id)
    return len(ids)


def run_enrollment(enrollment_id: int) -> Enrollment:
    """Enroll the stored files one by one, recording each result as it is made.

    Resumes after the last recorded result, and a file enrolled but not yet
    recorded (a crash in between) is found again by its source key, not doubled.
    """
    enrollment = Enrollment.objects.select_related("identity").get(pk=enrollment_id)
    if enrollment.status == Enrollment.Status.COMPLETED:
        return enrollment
    enrollment.status = Enrollment.Status.RUNNING
    enrollment.save(update_fields=["status"])
    for stored in enrollment.files[len(enrollment.results):]:
        result, _ = _enroll_blob(enrollment.identity, stored["name"], stored["sha256"], storage.get_bytes(stored["key"]))
        enrollment.results.append({"name": result.name, "template_id": result.template_id,
                                   "faces_found": result.faces_found, "box": result.box,
                                   "ignored_boxes": result.ignored_boxes, "error": result.error})
        enrollment.save(update_fields=["results"])
    sources = {f"sha256:{stored['sha256']}" for stored in enrollment.files}
    template_ids = list(Template.objects.filter(identity=enrollment.identity, source_key__in=sources)
                        .values_list("id", flat=True))
    with transaction.atomic():
        enrollment.status, enrollment.finished_at = Enrollment.Status.COMPLETED, timezone.now()
        enrollment.save(update_fields=["status", "finished_at"])
        if template_ids:
            schedule_rematch(enrollment.owner_id, template_ids=template_ids)
    return enrollment


def _rounded_box(box) -> list[float]:
    return [round(float(v), 1) for v in box]


def _enroll_box(box) -> tuple[float, float, float, float] | None:
    if box is None or box == "":
        return None
    if isinstance(box, str):
        box = box.strip().strip("[]").split(",")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ServiceError("invalid", "box must be x,y,width,height in pixels", field="box")
    if w < 8 or h < 8 or x < 0 or y < 0:
        raise ServiceError("invalid", "box must be at least 8x8 px, with x and y >= 0", field="box")
    return (x, y, w, h)


def _enrollment_face(pipeline, decoded, faces, box, result: EnrollResult):
    """The face to enroll from one photo, or None with ``result.error`` set."""
    from ml.subject import DOMINANCE_AREA_RATIO, dominant_face, face_in_box

    boxes = [f.box for f in faces]
    if box is not None:
        if box[0] + box[2] > decoded.width + 1 or box[1] + box[3] > decoded.height + 1:
            result.error = {"code": "invalid", "message": f"box must lie inside the {decoded.width}x{decoded.height} image",
                            "field": "box"}
            return None
        chosen = face_in_box(boxes, box)
        face = faces[chosen] if chosen is not None else pipeline.embed_box(decoded.pixels, box)
    else:
        if not faces:
            result.error = {"code": "no_face", "message": "no face found"}
            return None
        chosen = dominant_face(boxes)
        if chosen is None:
            result.error = {
                "code": "no_dominant_face",
                "message": (f"{len(faces)} faces found and none is clearly the largest (area at least "
                            f"{DOMINANCE_AREA_RATIO:g}x the next); send one of these boxes as 'box' to pick it"),
                "boxes": [_rounded_box(b) for b in boxes],
            }
            return None
        face = faces[chosen]
    result.box = _rounded_box(face.box)
    result.ignored_boxes = [_rounded_box(b) for i, b in enumerate(boxes) if i != chosen]
    return face


def _same_face(template: Template, face) -> bool:
    """A re-enrollment of a photo's face already enrolled (same embedding up to rounding)."""
    return float(np.dot(np.asarray(template.embedding, dtype=np.float32), face.embedding)) > 0.999


def create_templates(identity: Identity, *, embedding, crop, crop_key: str, source_key: str,
                     quality: float, source_face: Face | None = None) -> list[Template]:
    """The bare template of an enrolled face, then its masked-probe companion."""
    common = dict(owner_id=identity.owner_id, identity=identity, crop_key=crop_key, source_key=source_key,
                  source_face=source_face, quality=quality)
    bare = Template.objects.create(embedding=embedding, **common)
    masked = Template.objects.create(embedding=masked_template_embedding(crop, embedding), masked=True, **common)
    return [bare, masked]


@dataclass(frozen=True)
class TemplateRefusal:
    code: str  # low_quality | template_limit
    message: str
    status_code: int

    def as_error(self) -> dict:
        return {"code": self.code, "message": self.message}


def template_refusal(identity: Identity, quality: float, *, adding: int = 1) -> TemplateRefusal | None:
    """Why a face may not become one more template of ``identity`` (None: it may).

    A face below FACEINDEX_TEMPLATE_MIN_QUALITY is refused (low_quality): a
    blurred or tiny template would pull strangers in. At
    FACEINDEX_MAX_TEMPLATES_PER_IDENTITY templates a new one is refused
    (template_limit), never swapped in silently: the user deletes one first
    (DELETE /identities/{id}/templates/{template_id}).
    """
    minimum = settings.FACEINDEX_TEMPLATE_MIN_QUALITY
    if quality < minimum:
        return TemplateRefusal("low_quality", f"face quality {quality:.2f} is below the minimum {minimum:g} for a "
                               "template (too small, blurred or turned away)", 422)
    cap = settings.FACEINDEX_MAX_TEMPLATES_PER_IDENTITY
    count = Template.objects.filter(identity=identity, masked=False).count()
    if count + adding > cap:
        return TemplateRefusal("template_limit", f"{identity.name} has {count} of at most {cap} templates; "
                               "delete one before adding more", 409)
    return None


def faces_fit_for_templates(identity: Identity, faces: list[Face], *, limit: int) -> list[Face]:
    """Up to ``limit`` of ``faces`` (in order) that template_refusal lets become templates together."""
    fit: list[Face] = []
    for face in faces:
        if len(fit) == limit:
            break
        refusal = template_refusal(identity, face.quality, adding=len(fit) + 1)
        if refusal is None:
            fit.append(face)
        elif refusal.code == "template_limit":
            break  # no room for more
    return fit


def get_template(*, identity: Identity, template_id: int) -> Template:
    template = Template.objects.filter(identity=identity, pk=template_id, masked=False).first()
    if template is None:
        raise NotFound("not_found", f"template {template_id} of identity {identity.pk} not found")
    return template


def delete_template(*, identity: Identity, template_id: int) -> dict:
    """Undo one template (and its masked-probe companion); the identity's faces are matched again.

    Faces named through it are re-decided by the same rule (schedule_rematch of
    the identity's faces); faces a user placed stay placed. The crop object goes
    after the rows are committed.
    """
    with transaction.atomic():
        template = get_template(identity=identity, template_id=template_id)
        companions = Template.objects.filter(identity=identity, masked=True, source_key=template.source_key,
                                             crop_key=template.crop_key)
        keys = sorted({template.crop_key} - {""})
        deleted = 1 + companions.count()
        companions.delete()
        template.delete()
        schedule_rematch(identity.owner_id, identity_ids=[identity.pk])
        transaction.on_commit(lambda: storage.delete_keys(keys))
    return {"template_id": template_id, "templates_deleted": deleted}


def schedule_rematch(owner_id: int, **targets) -> None:
    """Re-match indexed faces in the background once the gallery changed."""
    transaction.on_commit(lambda: current_app.send_task("faceindex.rematch_faces", args=[owner_id], kwargs=targets))


def on_faces_indexed(owner_id: int, face_ids: list[int]) -> None:
    """After an image's faces are committed (jobs' faces_indexed signal, see receivers.py): cluster its unknown faces.

    Runs in the background (task faceindex.cluster_faces) so a job's images are
    not slowed down; clustering of one owner is serialised by an advisory lock.
    """
    if not face_ids:
        return
    try:
        # No publish retries: indexing must not wait on, or fail with, the broker.
        current_app.send_task("faceindex.cluster_faces", args=[owner_id], kwargs={"face_ids": list(face_ids)}, retry=False)
    except Exception:  # broker away: the faces stay cluster_checked=False and cluster_pending catches up
        log.warning("could not queue clustering of %d faces of owner %s", len(face_ids), owner_id, exc_info=True)


def _faces_near_templates(owner_id: int, template_ids: list[int], threshold: float) -> set[int]:
    face_ids: set[int] = set()
    for embedding in Template.objects.filter(owner_id=owner_id, pk__in=template_ids).values_list("embedding", flat=True):
        face_ids |= faces_near(owner_id, embedding, threshold)
    return face_ids


def faces_near(owner_id: int, embedding, threshold: float, *, limit: int = 10000) -> set[int]:
    """Faces of an owner within `threshold` cosine similarity (HNSW neighbours)."""
    rows = (
        Face.objects.filter(owner_id=owner_id)
        .annotate(distance=CosineDistance("embedding", embedding))
        .filter(distance__lte=1.0 - threshold)
        .order_by("distance")
        .values_list("id", flat=True)[:limit]
    )
    return set(rows)


def face_state(face: Face) -> list:
    """What re-matching may change on a face, as stored in a Merge for undo."""
    return [face.identity_id, face.similarity, face.identity_locked, face.cluster_id]


def rematch_faces(owner_id: int, face_ids, *, rule: matching.MatchRule, record: dict | None = None) -> tuple[int, list[int]]:
    """Match faces again (inside a transaction with configure_vector_search).

    Faces a user placed (identity_locked) are left alone. A face that changes
    identity leaves its unknown cluster. `record`, when given, receives the
    prior state of every face changed. Returns (changed, ids that became unknown).
    """
    changed, became_unknown = 0, []
    faces = Face.objects.filter(owner_id=owner_id, pk__in=list(face_ids), identity_locked=False)
    for face in faces.only("id", "embedding", "identity_id", "similarity", "identity_locked", "cluster_id", "mask_state",
                           "quality").order_by("id"):
        match = matching.match_embedding(owner_id, face.embedding, rule=rule, excluded=excluded_identities(face),
                                         probe_masked=is_masked(face.mask_state), quality=face.quality)
        if (match.identity_id, match.similarity) == (face.identity_id, face.similarity):
            continue
        if record is not None:
            record.setdefault(str(face.pk), face_state(face))
        update = {"identity_id": match.identity_id, "similarity": match.similarity}
        if match.identity_id is not None:
            update["cluster_id"] = None
        elif face.identity_id is not None:
            became_unknown.append(face.pk)
            update["cluster_checked"] = False
        Face.objects.filter(pk=face.pk).update(**update)
        changed += 1
    return changed, became_unknown


def rematch(*, owner_id: int, face_ids=None, template_ids=None, identity_ids=None) -> int:
    """Re-match faces a gallery change may affect; returns how many changed.

    - new templates: faces within threshold of them (HNSW neighbours), and
      faces whose match no longer reaches the threshold of the grown gallery
      (every template raises it a little: the same rule as at indexing);
    - identity ids (deleted, merged, templates removed): faces assigned to them;
    - explicit face ids.
    Faces left unknown are then clustered with the other unknown faces.
    """
    with transaction.atomic():
        matching.configure_vector_search()
        rule = matching.match_rule(owner_id)
        targets: set[int] = set(face_ids or [])
        if template_ids:
            targets |= _faces_near_templates(owner_id, list(template_ids), rule.lowest)
            targets |= set(Face.objects.filter(owner_id=owner_id, identity__isnull=False, identity_locked=False,
                                               similarity__lt=max(rule.threshold, rule.masked_threshold))
                           .values_list("id", flat=True))
        if identity_ids:
            targets |= set(Face.objects.filter(owner_id=owner_id, identity_id__in=identity_ids).values_list("id", flat=True))
        changed, _ = rematch_faces(owner_id, targets, rule=rule)
        clustering.prune_clusters(owner_id)
    clustering.cluster_pending(owner_id)
    return changed


def excluded_identities(face: Face) -> set[int]:
    """Identities a user said this face is not: matching never proposes them again."""
    return set(face.rejections.values_list("identity_id", flat=True))


def best_similarity(identity_id: int, embedding, *, probe_masked: bool = False) -> float | None:
    """Similarity of an embedding to an identity: its best template (the matching rule's score)."""
    templates = Template.objects.filter(identity_id=identity_id)
    if not probe_masked:
        templates = templates.filter(masked=False)
    templates = np.asarray(list(templates.values_list("embedding", flat=True)), dtype=np.float32)
    if not len(templates):
        return None
    return float(np.max(templates @ np.asarray(embedding, dtype=np.float32)))


# --- corrections ---------------------------------------------------------------------------------


def enroll_from_faces(*, identity: Identity, face_ids: list[int]) -> list[Template]:
    """Make detected faces templates of an identity; the faces are placed on it (locked)."""
    face_ids = list(dict.fromkeys(int(i) for i in face_ids))
    if not face_ids:
        raise ServiceError("invalid", "give one or more face ids", field="face_ids")
    faces = list(Face.objects.filter(owner_id=identity.owner_id, pk__in=face_ids))
    missing = set(face_ids) - {f.pk for f in faces}
    if missing:
        raise NotFound("not_found", f"faces not found: {sorted(missing)}", field="face_ids")
    templates, masked_ids = [], []
    with transaction.atomic():
        Identity.objects.select_for_update().filter(pk=identity.pk).first()  # one cap check at a time per identity
        existing = {t.source_face_id: t for t in
                    Template.objects.filter(identity=identity, source_face__in=faces, masked=False)}
        new = [f for f in faces if f.pk not in existing]
        for face in new:
            if (refusal := template_refusal(identity, face.quality, adding=len(new))) is not None:
                raise ServiceError(refusal.code, f"face {face.pk}: {refusal.message}", field="face_ids",
                                   status_code=refusal.status_code)
        for face in faces:
            if face.pk in existing:
                templates.append(existing[face.pk])
                continue
            key = _template_crop_key(identity)
            # A copy, not a reference: purging the identity must not delete the
            # image's face crop, and deleting the image must not break the template.
            crop_jpeg = storage.get_bytes(face.crop_key)
            storage.put_bytes(key, crop_jpeg, "image/jpeg")
            crop = cv2.imdecode(np.frombuffer(crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
            bare, masked = create_templates(identity, embedding=face.embedding, crop=crop, crop_key=key,
                                            source_key=f"face:{face.pk}", source_face=face, quality=face.quality)
            templates.append(bare)
            masked_ids.append(masked.pk)
        Rejection.objects.filter(face__in=faces, identity=identity).delete()
        # Its own template: similarity 1.
        Face.objects.filter(pk__in=[f.pk for f in faces]).update(
            identity=identity, similarity=1.0, identity_locked=True, cluster=None, placed_at=timezone.now())
        schedule_rematch(identity.owner_id, template_ids=[t.pk for t in templates] + masked_ids)
    return templates


def create_identity_from_face(*, owner, name: str, face_id: int) -> Identity:
    """A new identity whose first template is this face; nothing is created when the face is refused (low_quality)."""
    face = get_face(owner=owner, face_id=face_id)
    with transaction.atomic():
        identity = create_identity(owner=owner, name=name)
        enroll_from_faces(identity=identity, face_ids=[face.pk])
    return identity


def assign_face(*, owner, face_id: int, identity_id: int | None, as_template: bool = False) -> Face:
    """Move a face to another identity (a user's decision: matching will not undo it).

    identity_id None means "not this person" for its current identity.
    ``as_template``: the confirmed face also becomes one of the identity's
    templates (enroll_from_faces: quality filter and cap apply).
    """
    face = get_face(owner=owner, face_id=face_id)
    if identity_id is None:
        if face.identity_id is None:
            raise ServiceError("invalid", "the face has no identity; give identity_id", field="identity_id")
        return reject_face(owner=owner, face_id=face_id, identity_id=face.identity_id)
    identity = get_identity(owner=owner, identity_id=identity_id)
    if as_template:
        enroll_from_faces(identity=identity, face_ids=[face.pk])
        face.refresh_from_db()
        return face
    with transaction.atomic():
        Rejection.objects.filter(face=face, identity=identity).delete()
        face.identity, face.identity_locked, face.cluster = identity, True, None
        face.similarity = best_similarity(identity.pk, face.embedding)
        face.placed_at = timezone.now()
        face.save(update_fields=["identity", "identity_locked", "cluster", "similarity", "placed_at"])
    return face


def reject_face(*, owner, face_id: int, identity_id: int | None = None) -> Face:
    """"Not this person": a negative every later matching respects; the face is matched again now."""
    face = get_face(owner=owner, face_id=face_id)
    identity_id = identity_id if identity_id is not None else face.identity_id
    if identity_id is None:
        raise ServiceError("invalid", "the face has no identity; give identity_id", field="identity_id")
    identity = get_identity(owner=owner, identity_id=identity_id)
    with transaction.atomic():
        Rejection.objects.get_or_create(face=face, identity=identity)
        Face.objects.filter(pk=face.pk).update(placed_at=timezone.now())
        if face.identity_id == identity.pk:
            Face.objects.filter(pk=face.pk).update(identity=None, similarity=None, identity_locked=False, cluster_checked=False)
        matching.configure_vector_search()
        rematch_faces(owner.pk, [face.pk], rule=matching.match_rule(owner.pk))
    face.refresh_from_db()
    if face.identity_id is None:
        clustering.cluster_faces(owner.pk, [face.pk])
        face.refresh_from_db()
    return face


def delete_identity(*, identity: Identity, purge_faces: bool = False) -> dict:
    """Delete an identity and purge its enrollment data from the database and object storage.

    Templates and their crops go. Its faces belong to images, so by default
    they stay, unassigned, and are matched again (background); purge_faces
    also deletes those faces and their crops (an erasure request).
    """
    owner_id, identity_id = identity.owner_id, identity.pk
    with transaction.atomic():
        keys = list(Template.objects.filter(identity=identity).values_list("crop_key", flat=True))
        faces = Face.objects.filter(owner_id=owner_id, identity=identity)
        face_ids = list(faces.values_list("id", flat=True))
        if purge_faces:
            keys += list(faces.values_list("crop_key", flat=True))
            faces.delete()
        else:
            faces.update(identity=None, similarity=None, identity_locked=False, cluster_checked=False)
        # Counted as the API counts templates: enrolled faces, not their masked companions.
        templates_deleted = Template.objects.filter(identity=identity, masked=False).count()
        identity.delete()  # templates, rejections and merges into it cascade
        if face_ids and not purge_faces:
            schedule_rematch(owner_id, face_ids=face_ids)
    # Objects go after the rows: a crash in between leaves orphan objects
    # (found by the prefix listing below next time), never rows without objects.
    prefix = f"{owner_id}/templates/{identity_id}/"
    keys = sorted(set(keys) | set(storage.list_keys(prefix)))
    storage.delete_keys(keys)
    return {"templates_deleted": templates_deleted, "faces_unassigned": 0 if purge_faces else len(face_ids),
            "faces_deleted": len(face_ids) if purge_faces else 0, "objects_deleted": len(keys)}


def tag_face(*, owner, image_id: int, box, identity_id: int | None = None) -> Face:
    """Add a face the detector missed: the user's box is aligned, embedded and stored like any face."""
    image = Image.objects.filter(owner=owner, pk=image_id).first()
    if image is None:
        raise NotFound("not_found", f"image {image_id} not found")
    if image.status != Image.Status.DONE:
        raise ServiceError("image_not_indexed", f"image {image_id} is {image.status}, not indexed", status_code=409)
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ServiceError("invalid", "box must be [x, y, width, height]", field="box")
    identity = get_identity(owner=owner, identity_id=identity_id) if identity_id is not None else None
    try:
        # The same bytes the worker indexed (our bucket, an imported bucket or a folder).
        decoded = decode_image(originals.read_original(image), max_pixels=settings.FACEINDEX_MAX_PIXELS)
    except ImageDecodeError as exc:
        raise ServiceError(exc.code, str(exc), status_code=422)
    if w < 8 or h < 8 or x < 0 or y < 0 or x + w > decoded.width + 1 or y + h > decoded.height + 1:
        raise ServiceError("invalid", f"box must be at least 8x8 px and inside the {decoded.width}x{decoded.height} image", field="box")
    embedded = get_pipeline().embed_box(decoded.pixels, (x, y, w, h))
    attributes = describe_faces(decoded.pixels, [embedded], with_age_sex=False)[0]
    with transaction.atomic():
        Image.objects.select_for_update().get(pk=image.pk)  # one ordinal at a time per image
        ordinal = (Face.objects.filter(image=image).aggregate(m=Max("ordinal"))["m"] or 0) + 1
        key = originals.crop_key(image, ordinal)
        storage.put_bytes(key, encode_jpeg(embedded.crop), "image/jpeg")
        face = Face(
            owner=owner, image=image, ordinal=ordinal, manual=True,
            box_x=float(embedded.box[0]), box_y=float(embedded.box[1]), box_w=float(embedded.box[2]), box_h=float(embedded.box[3]),
            landmarks=[[float(a), float(b)] for a, b in embedded.landmarks],
            det_score=float(embedded.score), quality=float(embedded.quality), embedding=embedded.embedding, crop_key=key,
            **attributes.as_fields(),
        )
        if identity is not None:
            face.identity, face.identity_locked = identity, True
            face.similarity = best_similarity(identity.pk, embedded.embedding)
        else:
            matching.configure_vector_search()
            match = matching.match_embedding(owner.pk, embedded.embedding, probe_masked=attributes.masked,
                                             quality=float(embedded.quality))
            face.identity_id, face.similarity = match.identity_id, match.similarity
        face.save()
    if face.identity_id is None:
        clustering.cluster_faces(owner.pk, [face.pk])
        face.refresh_from_db()
    return face


# --- matching policy -----------------------------------------------------------------------------

MIN_TARGET_FPIR, MAX_TARGET_FPIR = 1e-6, 0.5
REMATCH_CHUNK = 5000  # face ids per background re-match task


def matching_policy(*, owner) -> dict:
    """The owner's open-set target and the thresholds it gives for the gallery as it stands."""
    rule = matching.match_rule(owner.pk)
    own = MatchingPolicy.objects.filter(owner=owner).exists()
    return {"target_fpir": rule.target_fpir, "source": "owner" if own else "deployment",
            "templates": rule.templates, "threshold": round(rule.threshold, 4),
            "masked_threshold": round(rule.masked_threshold, 4)}


def set_matching_policy(*, owner, target_fpir) -> dict:
    """Set (or with None reset to the deployment's) the owner's target FPIR; faces are matched again."""
    if target_fpir is None:
        MatchingPolicy.objects.filter(owner=owner).delete()
    else:
        try:
            target = float(target_fpir)
        except (TypeError, ValueError):
            raise ServiceError("invalid", "target_fpir must be a number", field="target_fpir")
        if not MIN_TARGET_FPIR <= target <= MAX_TARGET_FPIR:
            raise ServiceError("invalid", f"target_fpir must be between {MIN_TARGET_FPIR:g} and {MAX_TARGET_FPIR:g}",
                               field="target_fpir")
        MatchingPolicy.objects.update_or_create(owner=owner, defaults={"target_fpir": target})
    with transaction.atomic():
        # Every face the new threshold may decide differently: all that are not user-placed.
        face_ids = list(Face.objects.filter(owner=owner, identity_locked=False).order_by("id").values_list("id", flat=True))
        for start in range(0, len(face_ids), REMATCH_CHUNK):
            schedule_rematch(owner.pk, face_ids=face_ids[start:start + REMATCH_CHUNK])
    return matching_policy(owner=owner)
