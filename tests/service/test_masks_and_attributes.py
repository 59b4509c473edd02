"""Masked faces and opt-in age/sex through the REST API, with real models."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from backend.gallery.models import Face, Template
from backend.jobs.models import Image

from helpers.api import enroll, files_payload, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def jpeg(img) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


@pytest.fixture(scope="module")
def astronaut_photos():
    """The astronaut bare, and wearing a fabric mask drawn on the photo at her landmarks."""
    from ml.attributes.overlay import synthesize_masked_image
    from ml.package_images import astronaut_bgr
    from ml.pipeline import FacePipeline

    bare = astronaut_bgr()
    (face,) = FacePipeline.from_manifest().detect(bare)
    masked = synthesize_masked_image(bare, face.landmarks, "green")  # a fabric the classifier never trained on
    return {"bare.jpg": jpeg(bare), "masked.jpg": jpeg(masked)}


def test_masked_probe_finds_the_person_enrolled_without_a_mask(api, astronaut_photos):
    eileen = enroll(api, "Eileen Collins", {"enroll.jpg": astronaut_photos["bare.jpg"]})
    # Enrollment stores a masked-probe template beside the bare one.
    assert Template.objects.filter(identity_id=eileen, masked=False).count() == 1
    assert Template.objects.filter(identity_id=eileen, masked=True).count() == 1

    job = wait_for_job(api, api.post("/api/v1/jobs", files_payload({"probe.jpg": astronaut_photos["masked.jpg"]}),
                                     format="multipart").json()["id"])
    (face,) = api.get("/api/v1/faces", {"job": job["id"]}).json()["results"]
    assert face["mask"]["state"] in ("mask", "mask_incorrect")
    assert face["identity"] == {"id": eileen, "name": "Eileen Collins"}
    assert face["attributes"] is None  # age/sex are off unless the job asks

    masked_only = api.get("/api/v1/faces", {"mask": "mask,mask_incorrect"}).json()
    assert [f["id"] for f in masked_only["results"]] == [face["id"]]
    report = api.get(f"/api/v1/jobs/{job['id']}/report").json()
    assert report["report"]["identities"][0]["faces"][0]["mask"] == face["mask"]["state"]
    assert api.get("/api/v1/faces", {"mask": "balaclava"}).status_code == 400

    # 1:N search treats the masked probe the same way.
    probe = files_payload({"probe.jpg": astronaut_photos["masked.jpg"]})["files"][0]
    (result,) = api.post("/api/v1/search", {"file": probe}, format="multipart").json()["results"]
    assert result["mask"] in ("mask", "mask_incorrect")
    assert result["match"] == {"id": eileen, "name": "Eileen Collins"}


def test_bare_faces_are_not_flagged_and_attributes_appear_only_when_asked(api, astronaut_photos, sample_archive):
    files = {"bare.jpg": astronaut_photos["bare.jpg"],
             "hanks.jpg": (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()}
    plain = wait_for_job(api, api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"])
    plain_faces = Face.objects.filter(image__job_id=plain["id"])
    assert plain_faces.count() == 2
    for face in plain_faces:
        assert face.mask_state == "no_mask"
        assert face.age is None and face.sex == ""

    # The same photos again, now with age/sex asked for: the earlier faces are
    # linked (dedup), not indexed twice, and get the attributes they lacked.
    # A new photo in the same job is indexed with its attributes directly.
    mirrored = jpeg(cv2.flip(cv2.imdecode(np.frombuffer(files["bare.jpg"], np.uint8), cv2.IMREAD_COLOR), 1))
    asked = wait_for_job(api, api.post("/api/v1/jobs", {**files_payload({**files, "mirror.jpg": mirrored}),
                                                        "options": json.dumps({"attributes": True})},
                                       format="multipart").json()["id"])
    assert asked["linked_images"] == 2
    by_name = {Image.objects.get(pk=f["image_id"]).original_name: f
               for f in api.get("/api/v1/faces", {"job": asked["id"]}).json()["results"]}
    assert set(by_name) == {"bare.jpg", "hanks.jpg", "mirror.jpg"}
    assert by_name["bare.jpg"]["attributes"]["sex"] == "female"
    assert by_name["mirror.jpg"]["attributes"]["sex"] == "female"
    assert by_name["hanks.jpg"]["attributes"]["sex"] == "male"
    for face in by_name.values():
        assert 10 <= face["attributes"]["age"] <= 90
        assert face["mask"]["state"] == "no_mask"
