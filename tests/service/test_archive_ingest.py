"""Archive sources (S3 prefix, allow-listed folder), dedup, and zip refusals, against the real stack."""
from __future__ import annotations

import io
import os
import uuid

import pytest

from backend.core import storage
from backend.gallery.models import Face
from backend.jobs.models import Image

from helpers.api import files_payload, wait_for_job, zip_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def _photos(sample_archive) -> dict[str, bytes]:
    root = sample_archive.archive_dir
    return {name: (root / name).read_bytes() for name in
            ("2021/hanks-large.jpg", "2020/astronaut-crop.jpg", "2019/group-small-lowq.jpg")}


def test_s3_prefix_is_listed_and_indexed_in_place(api, sample_archive, settings):
    bucket = f"import-{uuid.uuid4().hex[:10]}"
    storage.ensure_bucket(bucket)
    client = storage.client()
    photos = _photos(sample_archive)
    for name, data in photos.items():
        client.put_object(bucket, f"archive/{name}", io.BytesIO(data), len(data))
    client.put_object(bucket, "archive/readme.txt", io.BytesIO(b"notes"), 5)  # not an image: not listed
    client.put_object(bucket, "archive-private/x.jpg", io.BytesIO(b"x"), 1)  # a sibling prefix: not listed
    settings.FACEINDEX_IMPORT_S3_BUCKETS = [bucket]

    response = api.post("/api/v1/jobs", {"source": f"s3://{bucket}/archive"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["source"] == "s3" and response.json()["total_images"] == len(photos)
    job = wait_for_job(api, response.json()["id"])
    assert (job["status"], job["processed_images"], job["failed_images"]) == ("completed", 3, 0)

    images = Image.objects.filter(job_id=job["id"])
    assert {i.original_name for i in images} == set(photos)
    for image in images:  # referenced in the source bucket, hashed by the worker
        assert image.source_bucket == bucket and image.object_key == f"archive/{image.original_name}"
        assert len(image.sha256) == 64 and image.size_bytes == len(photos[image.original_name])
    faces = Face.objects.filter(image__job_id=job["id"])
    assert faces.count() == job["faces_found"] >= 1 + 1 + 6
    assert set(storage.list_keys(f"{api.user.pk}/crops/")) >= {f.crop_key for f in faces}

    for refused in (f"s3://{settings.S3_BUCKET}/", "s3://some-other-bucket/x"):
        answer = api.post("/api/v1/jobs", {"source": refused}, format="json")
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "source_not_allowed", refused


def test_folder_import_only_under_allowed_roots(api, sample_archive, settings, tmp_path):
    root, outside = tmp_path / "imports", tmp_path / "private"
    (root / "family" / "2020").mkdir(parents=True)
    outside.mkdir()
    photos = _photos(sample_archive)
    for name, data in photos.items():
        (root / "family" / name.replace("/", "-")).write_bytes(data)
    (outside / "secret.jpg").write_bytes(photos["2021/hanks-large.jpg"])
    settings.FACEINDEX_IMPORT_ROOTS = [str(root)]

    for path, code, status in ((str(outside), "source_not_allowed", 403),
                               (f"{root}/../private", "source_not_allowed", 403),
                               ("family", "invalid_source", 400),
                               (f"{root}/missing", "source_not_found", 404)):
        answer = api.post("/api/v1/jobs", {"source": path}, format="json")
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), path

    os.symlink(outside, root / "private-link")
    assert api.post("/api/v1/jobs", {"source": str(root / "private-link")}, format="json").status_code == 403
    assert not Image.objects.filter(owner=api.user).exists()

    # A link inside the folder that leads out of the root is listed as a failed
    # image with its reason, never read; the rest of the folder is indexed.
    os.symlink(outside / "secret.jpg", root / "family" / "2020" / "link.jpg")
    response = api.post("/api/v1/jobs", {"source": f"file://{root}/family"}, format="json")
    assert response.status_code == 202, response.content
    job = wait_for_job(api, response.json()["id"])
    assert (job["source"], job["processed_images"], job["failed_images"]) == ("folder", 3, 1)
    assert {i.source_path for i in Image.objects.filter(job_id=job["id"], status=Image.Status.DONE)} == {
        str(p) for p in (root / "family").glob("*.jpg")}
    refused = Image.objects.get(job_id=job["id"], status=Image.Status.FAILED)
    assert (refused.original_name, refused.error_code, refused.source_path) == ("2020/link.jpg", "source_path_escapes", "")
    assert refused.attempts == 0 and not refused.faces.exists()


def test_already_indexed_content_is_linked_not_reprocessed(api, sample_archive, settings, tmp_path):
    photos = _photos(sample_archive)
    first = wait_for_job(api, api.post("/api/v1/jobs", files_payload(photos), format="multipart").json()["id"])
    faces_before = Face.objects.filter(owner=api.user).count()
    assert faces_before == first["faces_found"]

    # The same bytes under new names (uploads: known at ingest) plus one new photo.
    new = {"again/hanks.jpg": photos["2021/hanks-large.jpg"], "again/group.jpg": photos["2019/group-small-lowq.jpg"],
           "new.png": (sample_archive.archive_dir / "2020/astronaut-dark.png").read_bytes()}
    second = wait_for_job(api, api.post("/api/v1/jobs", files_payload(new), format="multipart").json()["id"])
    assert (second["processed_images"], second["linked_images"], second["failed_images"]) == (3, 2, 0)
    linked = Image.objects.filter(job_id=second["id"], linked_from__isnull=False)
    originals = {i.sha256: i for i in Image.objects.filter(job_id=first["id"])}
    for image in linked:
        assert image.status == Image.Status.DONE and image.linked_from == originals[image.sha256]
        assert image.attempts == 0 and not image.faces.exists()  # never claimed by a worker
    new_faces = Face.objects.filter(image__job_id=second["id"]).count()
    assert new_faces == 1 and Face.objects.filter(owner=api.user).count() == faces_before + 1
    expected = new_faces + sum(i.linked_from.faces.count() for i in linked)
    assert second["faces_found"] == expected
    report = api.get(f"/api/v1/reports/jobs/{second['id']}").json()
    assert report["faces"] == expected and report["linked"] == 2

    # Folder imports learn the hash in the worker: the same content is linked there.
    root = tmp_path / "roots"
    root.mkdir()
    (root / "copy.jpg").write_bytes(photos["2020/astronaut-crop.jpg"])
    settings.FACEINDEX_IMPORT_ROOTS = [str(root)]
    third = wait_for_job(api, api.post("/api/v1/jobs", {"source": str(root)}, format="json").json()["id"])
    image = Image.objects.get(job_id=third["id"])
    assert image.linked_from == originals[image.sha256] and third["linked_images"] == 1
    assert Face.objects.filter(owner=api.user).count() == faces_before + 1

    # Another owner's identical photo is theirs to index.
    from helpers.api import make_client

    other = make_client()
    theirs = wait_for_job(other, other.post("/api/v1/jobs", files_payload({"h.jpg": photos["2021/hanks-large.jpg"]}),
                                            format="multipart").json()["id"])
    assert theirs["linked_images"] == 0 and theirs["faces_found"] == 1


def test_zip_slip_and_zip_bomb_are_refused(api, settings):
    zipped = zip_bytes

    for name in ("../../etc/cron.d/x.jpg", "/etc/passwd.jpg", "a/../../b.jpg", "C:/windows/x.jpg"):
        answer = api.post("/api/v1/jobs", files_payload({"slip.zip": zipped({name: b"x"})}), format="multipart")
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "zip_unsafe_path", name
    bomb = zipped({"zeros.jpg": bytes(30 * 1024 * 1024)})  # 30 MB of zeros deflate ~1000:1
    assert len(bomb) < 100_000
    answer = api.post("/api/v1/jobs", files_payload({"bomb.zip": bomb}), format="multipart")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "zip_bomb"
    settings.FACEINDEX_ZIP_MAX_TOTAL_BYTES = 10 * 1024 * 1024
    answer = api.post("/api/v1/jobs", files_payload({"big.zip": bomb}), format="multipart")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "zip_too_large"
    assert not Image.objects.filter(owner=api.user).exists()
