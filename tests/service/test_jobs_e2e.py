"""End to end through REST, object storage, Redis and a real worker process."""
from __future__ import annotations

import pytest

from backend.core import storage
from backend.core.pipeline import get_pipeline
from backend.gallery.models import Face
from backend.jobs.models import Image, Job

from helpers.api import enroll_people, files_payload, make_client, read_tree, wait_for_job, zip_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def submit(client, files: dict[str, bytes], **headers):
    return client.post("/api/v1/jobs", files_payload(files), format="multipart", **headers)


def test_archive_indexed_end_to_end_finds_enrolled_people_and_not_strangers(api, sample_archive):
    ids = enroll_people(api, sample_archive.enroll_dir)
    archive = read_tree(sample_archive.archive_dir)
    response = submit(api, {"archive.zip": zip_bytes(archive)})
    assert response.status_code == 202, response.content
    job = wait_for_job(api, response.json()["id"])

    assert job["status"] == "completed"
    assert job["total_images"] == len(archive)
    assert job["failed_images"] == len(sample_archive.bad_files)
    assert job["processed_images"] == len(archive) - len(sample_archive.bad_files)

    report = api.get(f"/api/v1/jobs/{job['id']}/report").json()
    found = {row["name"]: {f["image"] for f in row["faces"]} for row in report["report"]["identities"]}
    assert found == sample_archive.appearances
    for row in report["report"]["identities"]:
        assert row["identity_id"] == ids[row["name"]]
        assert all(f["similarity"] >= get_pipeline().threshold for f in row["faces"])
    strangers = sum(sample_archive.strangers_in.values())
    assert report["summary"]["unknown_faces"] == strangers
    failures = {f["original_name"]: f["error_code"] for f in report["summary"]["failures"]}
    assert failures == {"broken/truncated.jpg": "corrupt", "broken/notes.txt": "unsupported_format"}

    # Originals and crops are really in object storage.
    keys = set(storage.list_keys(f"{api.user.pk}/"))
    assert {img.object_key for img in Image.objects.filter(job_id=job["id"])} <= keys
    assert {f.crop_key for f in Face.objects.filter(image__job_id=job["id"])} <= keys

    # Per-image and per-face results are paginated and carry what the API promises.
    images = api.get(f"/api/v1/jobs/{job['id']}/images", {"page_size": 5}).json()
    assert images["count"] == len(archive) and len(images["results"]) == 5 and images["next"]
    faces = api.get("/api/v1/faces", {"job": job["id"], "identity": ids["Tom Hanks"]}).json()
    assert faces["count"] == 2
    face = faces["results"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["crop_url"].startswith("http")
    assert face["identity"]["name"] == "Tom Hanks"


def test_exif_orientation_is_applied_before_detection(api, sample_archive):
    name = "2020/astronaut-rotated-exif.jpg"
    response = submit(api, {name: (sample_archive.archive_dir / name).read_bytes()})
    job = wait_for_job(api, response.json()["id"])
    image = Image.objects.get(job_id=job["id"])
    face = Face.objects.get(image=image)
    # Stored pixels are 512x512 rotated; upright, the face is in the upper half.
    assert (image.width, image.height) == (512, 512)
    assert face.box_y < 256 and face.box_h > 50


def test_same_idempotency_key_and_body_returns_the_same_job(api, sample_archive):
    files = {"hanks.jpg": (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()}
    first = submit(api, files, HTTP_IDEMPOTENCY_KEY="batch-0001")
    second = submit(api, files, HTTP_IDEMPOTENCY_KEY="batch-0001")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert Job.objects.filter(owner=api.user).count() == 1

    other = {"other.jpg": (sample_archive.archive_dir / "2020/astronaut-crop.jpg").read_bytes()}
    conflict = submit(api, other, HTTP_IDEMPOTENCY_KEY="batch-0001")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    wait_for_job(api, first.json()["id"])


def test_corrupt_and_oversized_uploads_fail_per_image_and_the_job_completes(api, sample_archive, settings):
    good = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
    files = {"good.jpg": good, "truncated.jpg": good[: len(good) // 3], "random.jpg": bytes(range(256)) * 40, "empty.png": b""}
    job = wait_for_job(api, submit(api, files).json()["id"])
    assert job["status"] == "completed"
    assert (job["processed_images"], job["failed_images"]) == (1, 3)
    images = {i["original_name"]: i for i in api.get(f"/api/v1/jobs/{job['id']}/images").json()["results"]}
    assert images["good.jpg"]["status"] == "done" and images["good.jpg"]["faces"] == 1
    for name in ("truncated.jpg", "random.jpg", "empty.png"):
        assert images[name]["status"] == "failed"
        assert images[name]["error"]["code"] in {"corrupt", "unsupported_format", "empty"}
        assert images[name]["error"]["message"]


def test_bad_requests_get_a_clear_error(api):
    no_files = api.post("/api/v1/jobs", {}, format="multipart")
    assert no_files.status_code == 400 and no_files.json()["error"]["code"] == "no_files"
    bad_options = api.post("/api/v1/jobs", {"files": [], "options": "{nope"}, format="multipart")
    assert bad_options.status_code == 400
    slip = zip_bytes({"../../etc/evil.jpg": b"x"})
    refused = submit(api, {"evil.zip": slip})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "zip_unsafe_path"
    assert Job.objects.filter(owner=api.user).count() == 0
    anonymous = make_client().__class__().get("/api/v1/jobs")
    assert anonymous.status_code == 401


def test_owners_never_see_each_others_data(api, sample_archive):
    enroll_people(api, sample_archive.enroll_dir)
    job = wait_for_job(api, submit(api, {"g.jpg": (sample_archive.archive_dir / "2019/group.jpg").read_bytes()}).json()["id"])
    image_id = Image.objects.get(job_id=job["id"]).pk
    identity_id = api.get("/api/v1/identities").json()["results"][0]["id"]

    other = make_client()
    for url in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/images", f"/api/v1/jobs/{job['id']}/report",
                f"/api/v1/images/{image_id}", f"/api/v1/identities/{identity_id}",
                f"/api/v1/identities/{identity_id}/faces", f"/api/v1/identities/{identity_id}/report"):
        assert other.get(url).status_code == 404, url
    assert other.post(f"/api/v1/identities/{identity_id}/enroll", files_payload({"a.jpg": b"x"}), format="multipart").status_code == 404
    for url in ("/api/v1/jobs", "/api/v1/identities", "/api/v1/faces"):
        assert other.get(url).json()["count"] == 0, url
    assert other.get("/api/v1/reports/identities").json()["identities"] == []

    # The other owner's faces in the same photo are matched only against their own (empty) gallery.
    mine = wait_for_job(other, submit(other, {"g.jpg": (sample_archive.archive_dir / "2019/group.jpg").read_bytes()}).json()["id"])
    assert Face.objects.filter(image__job_id=mine["id"], identity__isnull=False).count() == 0
    assert Face.objects.filter(image__job_id=mine["id"]).count() == 6


def test_a_jpeg_scan_over_the_pixel_cap_is_indexed_at_full_resolution_coordinates(api, sample_archive, settings):
    import cv2
    import numpy as np

    from ml.package_images import astronaut_bgr

    ids = enroll_people(api, sample_archive.enroll_dir)
    # A 10000x7000 (70 MP) scan, over the 60 MP cap that formats without
    # scaled decoding keep: the astronaut 4x enlarged at (6000, 3000).
    scan = np.full((7000, 10000, 3), 200, np.uint8)
    scan[3000:5048, 6000:8048] = cv2.resize(astronaut_bgr(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", scan, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok and scan.shape[0] * scan.shape[1] > settings.FACEINDEX_MAX_PIXELS
    del scan
    job = wait_for_job(api, submit(api, {"scan.jpg": data.tobytes()}).json()["id"])
    image = Image.objects.get(job_id=job["id"])
    assert image.status == Image.Status.DONE, (image.error_code, image.error_message)
    assert (image.width, image.height) == (10000, 7000)
    face = Face.objects.get(image=image)
    assert face.identity_id == ids["Eileen Collins"]
    # Box and landmarks are in the scan's own pixels: where the 512-px photo's
    # face lands once enlarged 4x and placed at (6000, 3000) (up to the
    # detector's precision: it sees this face at 1/8 of the scan's size).
    small = get_pipeline().detect(astronaut_bgr())[0]
    expected = np.float32(small.landmarks) * 4 + np.float32([6000, 3000])
    assert np.abs(np.float32(face.landmarks) - expected).max() < 0.1 * 4 * small.box[2]
    assert abs(face.box_w - 4 * small.box[2]) < 0.1 * 4 * small.box[2]
