"""An enrollment with more images than FACEINDEX_ENROLL_SYNC_MAX_FILES runs in the background with progress."""
from __future__ import annotations

import time

import pytest

from backend.gallery.models import Enrollment, Template

from .conftest import files_payload, make_client, zip_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def test_a_large_enrollment_answers_202_and_reports_progress_until_done(api, sample_archive, settings):
    settings.FACEINDEX_ENROLL_SYNC_MAX_FILES = 2
    archive = sample_archive.archive_dir
    photos = {name: (archive / name).read_bytes() for name in
              ("2020/astronaut-crop.jpg", "2020/astronaut-dark.png", "2020/astronaut-rotated-exif.jpg", "2021/no-face.jpg")}
    identity = api.post("/api/v1/identities", {"name": "Eileen"}, format="json").json()["id"]

    response = api.post(f"/api/v1/identities/{identity}/enroll", files_payload({"people.zip": zip_bytes(photos)}),
                        format="multipart")
    assert response.status_code == 202, response.content
    enrollment = response.json()
    assert response["Location"] == f"/api/v1/enrollments/{enrollment['id']}"
    assert (enrollment["status"], enrollment["total_files"]) == ("pending", len(photos))

    deadline = time.monotonic() + 120
    while enrollment["status"] != "completed":
        assert time.monotonic() < deadline, enrollment
        time.sleep(0.3)
        enrollment = api.get(f"/api/v1/enrollments/{enrollment['id']}").json()
        assert 0 <= enrollment["processed_files"] <= enrollment["total_files"]
    assert enrollment["processed_files"] == len(photos)
    errors = {r["name"]: r["error"]["code"] for r in enrollment["results"] if r["error"]}
    assert errors == {"2021/no-face.jpg": "no_face"}
    assert enrollment["enrolled"] == len(photos) - 1
    bare = Template.objects.filter(identity_id=identity, masked=False)
    assert bare.count() == len(photos) - 1 == len({t.source_key for t in bare})

    # Another owner cannot see it.
    assert make_client().get(f"/api/v1/enrollments/{enrollment['id']}").status_code == 404
    assert Enrollment.objects.get(pk=enrollment["id"]).finished_at is not None

