"""Index stored images in batches: read, decode, detect, align, embed, match, write faces.

A batch shares one embedding call for all its faces, one matching query and
one database transaction for all its images (faces in one multi-row insert,
job counters moved once per job). Decode and detection failures fail one
image alone; if the batch's transaction fails, each image is written again in
its own transaction, so one bad row cannot take the batch down. A re-run of a
finished image is a no-op (idempotent): writing re-checks this worker's claim.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

import cv2
import numpy as np
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from backend.core import outages, statements, storage
from backend.core.pipeline import encode_jpeg, get_pipeline
from backend.gallery import matching
from backend.gallery.models import Face
from ml.decode import decode_image

from . import completion, dedup, services
from .models import Image
from .originals import SourceUnreadable, crop_key, read_original
from .signals import faces_indexed

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "embed", "attributes", "match", "write")


@dataclass
class Work:
    image: Image
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    decoded: object | None = None  # ml.decode.DecodedImage, maybe at reduced size (large JPEGs)
    data: bytes | None = None  # the original bytes while a larger decode for the crops may be needed
    faces: list = field(default_factory=list)  # EmbeddedFace, in full-resolution coordinates
    # Pixels and faces for age/sex, whose chips are cut from the image (only for jobs that ask).
    attribute_pixels: object | None = None
    attribute_faces: list = field(default_factory=list)
    attributes: list = field(default_factory=list)  # gallery.attributes.FaceAttributes per face
    new_content: bool = False  # sha256 computed in this batch, not yet stored

    @contextmanager
    def timed(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


def _parse_taken_at(value: str | None):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, timezone.get_default_timezone())


def process_images(image_ids: list[int], *, worker_name: str) -> None:
    from ml.errors import ImageDecodeError
    claimed = services.claim_images(list(image_ids), worker_name=worker_name)
    if not claimed:
        return
    to_embed: list[Work] = []
    first_of_content: dict[str, Work] = {}
    duplicates: list[tuple[Work, Work]] = []
    read = _read_originals(claimed)
    indexed = _record_contents(read)
    read.reverse()
    while read:  # popped: each original's bytes are let go once decoded (kept only for a reduced decode)
        work, data = read.pop()
        image = work.image
        try:
            with work.timed("decode"):
                if (image.owner_id, image.sha256) in indexed and _link_if_indexed(work, worker_name, data=data):
                    continue
                if image.sha256 in first_of_content:  # same bytes twice in one batch: index once
                    duplicates.append((work, first_of_content[image.sha256]))
                    continue
                first_of_content[image.sha256] = work
                work.decoded = decode_for_detection(data)
                work.data = data if work.decoded.reduced else None
        except ImageDecodeError as exc:
            services.fail_image(image.pk, code=exc.code, message=str(exc))
            continue
        to_embed.append(work)
    to_embed = _detect_and_embed(to_embed)
    # The crops upload while the attributes are computed and the batch is written.
    with _crops_uploading(to_embed) as crops_uploaded:
        _describe(to_embed)
        _write_batch(to_embed, worker_name=worker_name, crops_uploaded=crops_uploaded)
    for work, _first in duplicates:
        if not _link_if_indexed(work, worker_name):
            # The first copy failed: this one fails for the same reason.
            first = Image.objects.get(pk=_first.image.pk)
            services.fail_image(work.image.pk, code=first.error_code or "internal_error",
                                message=first.error_message or "the same content failed in this batch")


def _read_originals(claimed: list[Image]) -> list[tuple[Work, bytes]]:
    """Each claimed image's bytes and sha256; an unreadable or oversized one fails alone."""
    read = []
    for image in claimed:
        work = Work(image)
        try:
            with work.timed("decode"):
                data = read_original(image)
                if len(data) > settings.FACEINDEX_MAX_UPLOAD_BYTES:
                    raise SourceUnreadable("file_too_large", f"larger than {settings.FACEINDEX_MAX_UPLOAD_BYTES} bytes")
                if not image.sha256:
                    image.sha256 = hashlib.sha256(data).hexdigest()
                    image.size_bytes = len(data)
                    work.new_content = True
        except SourceUnreadable as exc:
            services.fail_image(image.pk, code=exc.code, message=str(exc))
            continue
        read.append((work, data))
    return read


def _record_contents(read: list[tuple[Work, bytes]]) -> set[tuple[int, str]]:
    """Store the hashes just computed and find the contents already indexed, in one round trip.

    Returns the (owner id, sha256) pairs with a canonical indexed image: only
    those images need the (locked) link check of _link_if_indexed.
    """
    if not read:
        return set()
    started = time.perf_counter()
    new = [w.image for w, _ in read if w.new_content]
    contents = {(w.image.owner_id, w.image.sha256) for w, _ in read}
    batch = [
        (f"""UPDATE {Image._meta.db_table} AS i SET sha256 = u.sha256, size_bytes = u.size_bytes
             FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS u(id, sha256, size_bytes) WHERE i.id = u.id""",
         [[i.pk for i in new], [i.sha256 for i in new], [i.size_bytes for i in new]]),
        dedup.indexed_contents_statement(contents, exclude_ids=[w.image.pk for w, _ in read]),
    ]
    indexed = set(statements.run_together(batch)[1])
    for work, _ in read:
        work.seconds["decode"] += (time.perf_counter() - started) / len(read)
    return indexed


# A face at least this wide in the pixels it is cut from loses next to nothing
# to the 112x112 aligned crop: benchmarks/bench_decode.py measured the
# embedding's cosine to the full-resolution crop's at >= 0.994 from 128 px,
# 0.990 at 96-128 px, down to 0.86 below 64 px. Smaller faces get their crops
# from a second, larger decode of the JPEG.
CROP_SOURCE_MIN_FACE = 128


def decode_for_detection(data: bytes):
    """Decode at the detector's working size where the format allows it (JPEG), within the pixel caps."""
    return decode_image(data, max_pixels=settings.FACEINDEX_MAX_PIXELS, max_jpeg_pixels=settings.FACEINDEX_MAX_JPEG_PIXELS,
                        max_side=getattr(get_pipeline().detector, "max_side", None))


def _crop_source(work: Work, faces: list) -> tuple[np.ndarray, float, float]:
    """Pixels to cut the aligned crops from, and their scale against full resolution."""
    decoded = work.decoded
    if not decoded.reduced or not faces:
        return decoded.pixels, decoded.scale_x, decoded.scale_y
    smallest = min(min(f.box[2], f.box[3]) for f in faces)
    needed = min(1.0, CROP_SOURCE_MIN_FACE / max(smallest, 1.0))
    if needed <= min(decoded.scale_x, decoded.scale_y):
        return decoded.pixels, decoded.scale_x, decoded.scale_y
    larger = decode_image(work.data, max_pixels=settings.FACEINDEX_MAX_PIXELS, max_jpeg_pixels=settings.FACEINDEX_MAX_JPEG_PIXELS,
                          max_side=int(np.ceil(needed * max(decoded.width, decoded.height))))
    return larger.pixels, larger.scale_x, larger.scale_y


def _scaled(face, sx: float, sy: float):
    """A detection moved between pixel grids (x scaled by sx, y by sy)."""
    x, y, w, h = face.box
    return replace(face, box=(x * sx, y * sy, w * sx, h * sy),
                   landmarks=(np.asarray(face.landmarks, np.float32) * np.float32([sx, sy])).astype(np.float32))


def _detect_and_embed(batch: list[Work]) -> list[Work]:
    """Detect per image, then align and embed every face of the batch in one call.

    Mirrors FacePipeline.process_batch, split into its stages so each is timed.
    An image the detector cannot handle fails alone; the rest of the batch goes
    on. Returns the works still in the batch.
    """
    if not batch:
        return []
    pipeline = get_pipeline()
    if getattr(pipeline, "runs_batches_on_device", False) and _embed_on_device(pipeline, batch):
        return batch
    detections, kept = [], []
    for work in batch:
        try:
            with work.timed("detect"):
                detections.append(pipeline.detect(work.decoded.pixels))
        except (ValueError, cv2.error) as exc:  # unusual geometry or pixel data for the detector
            log.warning("detector failed on image %s: %s", work.image.pk, exc)
            services.fail_image(work.image.pk, code="detector_error", message=f"face detector failed: {exc}")
            continue
        kept.append(work)
    batch = kept
    crops, located = [], []
    for work, faces in zip(batch, detections):
        decoded = work.decoded
        # Boxes and landmarks as stored: full-resolution upright pixels.
        full = [_scaled(f, 1 / decoded.scale_x, 1 / decoded.scale_y) for f in faces]
        with work.timed("decode"):
            pixels, sx, sy = _crop_source(work, full)
        with work.timed("embed"):
            in_source = [_scaled(f, sx, sy) for f in full]
            crops += [pipeline.align(pixels, f.landmarks) for f in in_source]
        if wants_age_sex(work.image):
            work.attribute_pixels, work.attribute_faces = pixels, in_source
        work.data = None
        located.append(full)
    started = time.perf_counter()
    embeddings = pipeline.embed_crops(crops) if crops else np.zeros((0, pipeline.embedding_dim), np.float32)
    embed_seconds = time.perf_counter() - started
    row = 0
    for work, faces in zip(batch, located):
        # The shared embedding call is charged to images by their share of the faces.
        work.seconds["embed"] += embed_seconds * len(faces) / max(len(crops), 1)
        for face in faces:
            work.faces.append(pipeline.embedded_face(face, crops[row], embeddings[row]))
            row += 1
    return batch


def _embed_on_device(pipeline, batch: list[Work]) -> bool:
    """The whole batch in one device call (TorchFacePipeline); False leaves it to the per-image path.

    The device call already retries a failing GPU smaller, then on the CPU; an
    image the detector rejects (odd geometry) fails the call, and then the
    per-image path isolates it.
    """
    started = time.perf_counter()
    try:
        results = pipeline.process_batch([work.decoded.pixels for work in batch])
    except (ValueError, cv2.error) as exc:
        log.warning("batched detection failed (%s); going image by image", exc)
        return False
    seconds = time.perf_counter() - started
    total = sum(len(faces) for faces in results)
    for work, faces in zip(batch, results):
        # One call for the batch: charged to images by their share of the faces (at least 1 each).
        work.seconds["embed"] += seconds * (len(faces) + 1) / (total + len(batch))
        decoded = work.decoded
        if wants_age_sex(work.image):
            work.attribute_pixels, work.attribute_faces = decoded.pixels, list(faces)
        # Found in the (maybe reduced) decode; stored in full-resolution pixels. The
        # crops come from that decode too: no second, larger decode on this path.
        work.faces.extend(_scaled(f, 1 / decoded.scale_x, 1 / decoded.scale_y) for f in faces)
        work.data = None
    return True


def _describe(batch: list[Work]) -> None:
    """Mask state for every face; age and sex only for jobs that opted in."""
    from backend.gallery.attributes import describe_faces

    for work in batch:
        with work.timed("attributes"):
            # Age/sex chips are cut from the pixels the crops came from, with the landmarks in them.
            faces = [replace(face, box=at.box, landmarks=at.landmarks) for face, at in zip(work.faces, work.attribute_faces)] \
                if wants_age_sex(work.image) else work.faces
            work.attributes = describe_faces(work.attribute_pixels, faces, with_age_sex=wants_age_sex(work.image))
        work.attribute_pixels, work.attribute_faces = None, []


def wants_age_sex(image: Image) -> bool:
    return bool((image.job.options or {}).get("attributes"))


def _link_if_indexed(work: Work, worker_name: str, data: bytes | None = None) -> bool:
    """Link the image to this owner's earlier indexing of the same content, if any.

    A job that asks for age/sex first fills them in on the earlier faces when
    that indexing skipped them (``data``: this image's bytes, the same content).
    """
    image = work.image
    canonical = dedup.indexed_image(image.owner_id, image.sha256, exclude_id=image.pk)
    if canonical is None:
        return False
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.PROCESSING or locked.worker != worker_name:
            return True
        _finish_as_link(work, locked, canonical, load_pixels=lambda: _full_size_pixels(decode_image(
            data, max_pixels=settings.FACEINDEX_MAX_PIXELS, max_jpeg_pixels=settings.FACEINDEX_MAX_JPEG_PIXELS))
            if data is not None else None)
    return True


def _full_size_pixels(decoded) -> np.ndarray:
    """Pixels on the full-resolution grid the stored landmarks use (age/sex filled in on a link: rare)."""
    if not decoded.reduced:
        return decoded.pixels
    return cv2.resize(decoded.pixels, (decoded.width, decoded.height), interpolation=cv2.INTER_LINEAR)


def _finish_as_link(work: Work, locked: Image, canonical: dedup.Indexed, load_pixels) -> None:
    """Inside the caller's transaction, with ``locked`` claimed by this worker."""
    from backend.gallery.attributes import fill_missing_age_sex

    if wants_age_sex(locked):
        with work.timed("attributes"):
            if (pixels := load_pixels()) is not None:
                fill_missing_age_sex(canonical.image, lambda: pixels)
    new_faces = dedup.faces_new_to_job(locked.job_id, canonical)
    dedup.mark_linked(locked, canonical)
    locked.timings = {k: round(v, 5) for k, v in work.seconds.items()}
    locked.save()
    completion.finish_image(locked, failed=False, faces_found=new_faces, linked=True)


CROP_UPLOAD_THREADS = 8  # crop PUTs are network round trips: overlap them
_upload_pool: ThreadPoolExecutor | None = None


def _uploader() -> ThreadPoolExecutor:
    """The process's crop upload threads, started once: starting 8 threads per batch cost ~45 ms under load."""
    global _upload_pool
    if _upload_pool is None:
        _upload_pool = ThreadPoolExecutor(max_workers=CROP_UPLOAD_THREADS, thread_name_prefix="crop-upload")
    return _upload_pool


@contextmanager
def _crops_uploading(batch: list[Work]):
    """Upload the batch's crops in threads while the caller works; yields a wait() that raises an upload's error.

    The caller waits before its commit: a committed face always has its crop.
    Every upload has ended when the block is left, whatever happened in it.
    """
    uploads = [(crop_key(work.image, ordinal), face.crop) for work in batch for ordinal, face in enumerate(work.faces)]
    pool = _uploader()
    futures = [pool.submit(lambda key, crop: storage.put_bytes(key, encode_jpeg(crop), "image/jpeg"), key, crop)
               for key, crop in uploads]

    def wait() -> None:
        for future in futures:
            future.result()

    try:
        yield wait
    finally:
        futures_wait(futures)


def _charge(batch: list[Work], stage: str, seconds: float) -> None:
    """Split a stage shared by the batch among its images, by their share of the faces (evenly if none)."""
    faces = sum(len(w.faces) for w in batch)
    for work in batch:
        work.seconds[stage] += seconds * (len(work.faces) / faces if faces else 1 / len(batch))


def _write_batch(batch: list[Work], *, worker_name: str, crops_uploaded) -> None:
    """Write the batch (``crops_uploaded``: waits for its crops, which upload meanwhile)."""
    if not batch:
        return
    started = time.perf_counter()
    try:
        with transaction.atomic():
            _write_batch_rows(batch, worker_name=worker_name, crops_uploaded=crops_uploaded, started=started)
    except DatabaseError as exc:
        if outages.is_outage(exc):
            raise  # the database is away, not one image's fault: the task waits it out
        # A deadlock or one bad row: nothing of the batch was written. Each
        # image gets its own transaction, so a bad one fails alone.
        log.warning("batch write of %d images failed; writing them one by one", len(batch), exc_info=True)
        crops_uploaded()
        for work in batch:
            _write_faces(work, worker_name=worker_name)


def _write_batch_rows(batch: list[Work], *, worker_name: str, crops_uploaded, started: float) -> None:
    """The whole batch in the caller's transaction: claims checked, links, matching, faces, counters.

    Two round trips and the commit, whatever the batch size: every read and
    lock in one, every write in the other (core/statements.py says why). The
    crops upload meanwhile (``crops_uploaded`` waits for them); ``started``:
    when the write began.
    """
    ids = sorted(w.image.pk for w in batch)
    contents = {(w.image.owner_id, w.image.sha256) for w in batch if w.image.sha256}
    by_owner: dict[int, list[Work]] = defaultdict(list)
    for work in batch:
        by_owner[work.image.owner_id].append(work)
    owners = sorted(by_owner)
    probes = {owner_id: [(face, attrs) for work in by_owner[owner_id] for face, attrs in zip(work.faces, work.attributes)]
              for owner_id in owners}
    settings_sql = matching.vector_search_settings()
    reads = [(sql, []) for sql in settings_sql] + [
        # Another worker may have finished or re-claimed an image meanwhile: locked, then checked.
        (f"SELECT id, status, worker FROM {Image._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids]),
        # Same bytes indexed at once by two workers: the content locks make the
        # second wait for the first's commit and then link instead of writing twice.
        dedup.lock_contents_statement(contents),
        dedup.indexed_contents_statement(contents, exclude_ids=ids),
        (f"SELECT DISTINCT image_id FROM {Face._meta.db_table} WHERE image_id = ANY(%s)", [ids]),  # a re-run's old faces
    ]
    for owner_id in owners:  # the owner's gallery as it stands now
        reads.append(matching.match_rule_statement(owner_id))
        reads.append(matching.identity_scores_statement(owner_id, [f.embedding for f, _ in probes[owner_id]],
                                                        [a.masked for _, a in probes[owner_id]]))
    results = iter(statements.run_together(reads)[len(settings_sql):])
    claims = {pk: (status, worker) for pk, status, worker in next(results)}
    next(results)
    indexed = set(next(results))
    with_old_faces = {image_id for image_id, in next(results)}
    live = [w for w in batch if claims.get(w.image.pk) == (Image.Status.PROCESSING, worker_name)]
    live_ids = {w.image.pk for w in live}

    match_seconds = 0.0
    fresh: list[Work] = []
    rows: list[Face] = []
    for owner_id in owners:
        rule = matching.match_rule_from_row(next(results)[0])
        scores = matching.identity_scores_from_rows(len(probes[owner_id]), next(results))
        decided = time.perf_counter()
        matches = iter([matching.decide(s, rule=rule, probe_masked=attrs.masked, quality=face.quality)
                        for s, (face, attrs) in zip(scores, probes[owner_id])])
        match_seconds += time.perf_counter() - decided
        for work in by_owner[owner_id]:
            work_matches = [next(matches) for _ in work.faces]
            image = work.image
            if image.pk not in live_ids:
                continue
            if (owner_id, image.sha256) in indexed:  # already indexed: a link (rare; its own queries)
                _link_in_batch(work, owner_id)
                continue
            fresh.append(work)
            rows.extend(_face_rows(image, work, work_matches))
    _charge(fresh, "match", match_seconds)
    if not fresh:
        crops_uploaded()
        return
    if stale := [w.image.pk for w in fresh if w.image.pk in with_old_faces]:
        Face.objects.filter(image_id__in=stale).delete()  # processing an image again replaces its faces
    for work in fresh:
        _mark_done(work.image, work.decoded)
    crops_uploaded()
    # Write time without matching: this transaction and any wait for the crop uploads. The
    # last round trip is timed by the database itself (_done_statement) and added per image.
    writes_sent = time.time()
    _charge(fresh, "write", time.perf_counter() - started - match_seconds)
    finished: dict[int, list[int]] = defaultdict(list)  # job id -> faces per image
    for work in fresh:
        finished[work.image.job_id].append(len(work.faces))
    writes = [statements.insert_returning_pks(rows)] if rows else []
    writes.append(_done_statement(fresh, writes_sent))
    writes += [completion.count_finished_statement(job_id, processed=len(faces), faces_found=sum(faces))
               for job_id, faces in sorted(finished.items())]
    results = statements.run_together(writes)
    if rows:
        statements.set_pks(rows, results.pop(0))
    for counted in results[1:]:
        completion.complete_counted(counted)
    for owner_id in owners:
        owner_rows = [row for row in rows if row.owner_id == owner_id]
        if owner_rows:
            face_ids = [row.pk for row in owner_rows]
            unknown_ids = [row.pk for row in owner_rows if row.identity_id is None]
            transaction.on_commit(lambda owner_id=owner_id, face_ids=face_ids, unknown_ids=unknown_ids:
                                  _faces_indexed(owner_id, face_ids, unknown_ids))


def _link_in_batch(work: Work, owner_id: int) -> None:
    """Finish a batch image whose content this owner has indexed already (inside the batch's transaction)."""
    image = Image.objects.select_related("job").get(pk=work.image.pk)  # locked by the batch's transaction
    canonical = dedup.indexed_images(owner_id, {image.sha256}, exclude_id=image.pk)[image.sha256]
    _finish_as_link(work, image, canonical, load_pixels=lambda: _full_size_pixels(work.decoded))
    keys = [crop_key(image, ordinal) for ordinal in range(len(work.faces))]
    transaction.on_commit(lambda: storage.delete_keys(keys))


def _done_statement(fresh: list[Work], writes_sent: float) -> statements.Statement:
    """Mark the images done with their timings, as one UPDATE.

    Each image's write time gets its share (by faces) of the time from
    ``writes_sent`` (epoch seconds) to this statement, which runs after the
    faces' INSERT: the database's clock times the last round trip.
    """
    faces = sum(len(w.faces) for w in fresh)
    images = [w.image for w in fresh]
    sql = f"""
        UPDATE {Image._meta.db_table} AS i
        SET status = u.status, worker = u.worker, error_code = u.error_code, error_message = u.error_message,
            processed_at = u.processed_at, width = u.width, height = u.height, taken_at = u.taken_at,
            gps_lat = u.gps_lat, gps_lon = u.gps_lon,
            timings = u.timings::jsonb || jsonb_build_object('write', round((u.write
                + u.share * extract(epoch FROM clock_timestamp() - to_timestamp(%s)))::numeric, 5))
        FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::int[], %s::int[],
                    %s::timestamptz[], %s::float8[], %s::float8[], %s::text[], %s::float8[], %s::float8[])
            AS u(id, status, worker, error_code, error_message, processed_at, width, height, taken_at, gps_lat, gps_lon,
                 timings, write, share)
        WHERE i.id = u.id
    """
    columns = [[i.pk for i in images], [i.status for i in images], [i.worker for i in images],
               [i.error_code for i in images], [i.error_message for i in images], [i.processed_at for i in images],
               [i.width for i in images], [i.height for i in images], [i.taken_at for i in images],
               [i.gps_lat for i in images], [i.gps_lon for i in images],
               [json.dumps({k: round(v, 5) for k, v in w.seconds.items() if k != "write"}) for w in fresh],
               [w.seconds["write"] for w in fresh],
               [len(w.faces) / faces if faces else 1 / len(fresh) for w in fresh]]
    return sql, [writes_sent, *columns]


def _mark_done(image: Image, decoded) -> None:
    image.status = Image.Status.DONE
    image.width, image.height = decoded.width, decoded.height
    image.taken_at = _parse_taken_at(decoded.taken_at)
    if decoded.gps:
        image.gps_lat, image.gps_lon = decoded.gps
    image.processed_at = timezone.now()
    image.worker = ""
    image.error_code = image.error_message = ""


def _face_rows(image: Image, work: Work, matches: list[matching.Match]) -> list[Face]:
    rows = []
    for ordinal, (face, match, attrs) in enumerate(zip(work.faces, matches, work.attributes)):
        x, y, w, h = face.box
        rows.append(Face(
            owner_id=image.owner_id,
            image=image,
            ordinal=ordinal,
            box_x=x, box_y=y, box_w=w, box_h=h,
            landmarks=[[float(a), float(b)] for a, b in face.landmarks],
            det_score=float(face.score),
            quality=float(face.quality),
            embedding=face.embedding,
            identity_id=match.identity_id,
            similarity=match.similarity,
            crop_key=crop_key(image, ordinal),
            **attrs.as_fields(),
        ))
    return rows


def _faces_indexed(owner_id: int, face_ids: list[int], unknown_face_ids: list[int]) -> None:
    # After commit, once per owner per batch: receivers (gallery clustering,
    # connected in its AppConfig.ready) react to the new faces.
    faces_indexed.send(sender=Image, owner_id=owner_id, face_ids=face_ids, unknown_face_ids=unknown_face_ids)


def _write_faces(work: Work, *, worker_name: str) -> None:
    """One image in its own transaction: the fallback when its batch's transaction failed (crops are uploaded)."""
    image, decoded, faces = work.image, work.decoded, work.faces
    write_started = time.perf_counter()
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.PROCESSING or locked.worker != worker_name:
            return  # another worker finished or re-claimed it meanwhile
        dedup.lock_contents(image.owner_id, [image.sha256])
        canonical = dedup.indexed_image(image.owner_id, image.sha256, exclude_id=image.pk)
        if canonical is not None:
            _finish_as_link(work, locked, canonical, load_pixels=lambda: _full_size_pixels(decoded))
            keys = [crop_key(image, ordinal) for ordinal in range(len(faces))]
            transaction.on_commit(lambda: storage.delete_keys(keys))
            return
        with work.timed("match"):
            matching.configure_vector_search()
            rule = matching.match_rule(image.owner_id)  # the owner's gallery as it stands now
            scores = matching.identity_scores_batch(image.owner_id, [f.embedding for f in faces],
                                                    [a.masked for a in work.attributes])
            matches = [matching.decide(s, rule=rule, probe_masked=a.masked, quality=f.quality)
                       for s, a, f in zip(scores, work.attributes, faces)]
        Face.objects.filter(image=locked).delete()
        rows = _face_rows(locked, work, matches)
        Face.objects.bulk_create(rows)
        _mark_done(locked, decoded)
        work.seconds["write"] += time.perf_counter() - write_started - work.seconds["match"]
        locked.timings = {k: round(v, 5) for k, v in work.seconds.items()}
        locked.save()
        completion.finish_image(locked, failed=False, faces_found=len(rows))
        # Receivers (e.g. gallery clustering, connected in its AppConfig.ready)
        # run once per written image, after its faces are committed.
        face_ids = [row.pk for row in rows]
        unknown_ids = [row.pk for row in rows if row.identity_id is None]
        transaction.on_commit(lambda: _faces_indexed(image.owner_id, face_ids, unknown_ids))
