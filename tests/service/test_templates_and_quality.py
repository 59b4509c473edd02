"""Several templates per identity: the cap, the quality filter, undo (delete + re-match); low-quality faces stay unnamed."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.core import storage
from backend.core.pipeline import get_pipeline
from backend.gallery import matching, services
from backend.gallery.models import Face, Template
from ml.package_images import astronaut_bgr

from helpers.api import enroll, files_payload, index, make_client
from helpers.gallery import faces_of, jpeg, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def shrunk(img, factor: float, blur: float = 0.0) -> bytes:
    """The photo shrunk so its face is tiny (INTER_AREA, as a thumbnail would be), maybe out of focus too."""
    small = cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return jpeg(cv2.GaussianBlur(small, (0, 0), blur) if blur else small)


def new_identity(api, name: str) -> int:
    created = api.post("/api/v1/identities", {"name": name}, format="json")
    assert created.status_code == 201, created.content
    return created.json()["id"]


def enroll_files(api, identity: int, files: dict[str, bytes]):
    return api.post(f"/api/v1/identities/{identity}/enroll", files_payload(files), format="multipart")


def bare_templates(identity: int) -> int:
    return Template.objects.filter(identity_id=identity, masked=False).count()


def test_templates_are_capped_per_identity_and_the_cap_is_refused_with_a_reason(api, settings):
    settings.FACEINDEX_MAX_TEMPLATES_PER_IDENTITY = 2
    astronaut = astronaut_bgr()
    eileen = new_identity(api, "Eileen")
    first = enroll_files(api, eileen, {"a.jpg": jpeg(astronaut), "b.jpg": jpeg(cv2.flip(astronaut, 1))})
    assert first.status_code == 201 and first.json()["enrolled"] == 2, first.content
    assert bare_templates(eileen) == 2

    # At the cap a new photo is refused (never swapped in silently) and nothing is stored.
    third = enroll_files(api, eileen, {"c.jpg": jpeg(cv2.resize(astronaut, None, fx=0.8, fy=0.8))})
    assert third.status_code == 422, third.content
    body = third.json()
    assert body["error"]["code"] == "template_limit" and body["results"][0]["error"]["code"] == "template_limit"
    assert "2" in body["results"][0]["error"]["message"]
    assert bare_templates(eileen) == 2

    # Confirmed faces count against the same cap: enroll-faces is refused with 409.
    job = index(api, {"astronaut-small.jpg": jpeg(cv2.resize(astronaut, None, fx=0.7, fy=0.7))})
    face = faces_of(job["id"], "astronaut-small.jpg").get()
    refused = api.post(f"/api/v1/identities/{eileen}/enroll-faces", {"face_ids": [face.pk]}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "template_limit", refused.content
    assert bare_templates(eileen) == 2

    # So does a face confirmed with assign + template; a plain assign is not a template and still works.
    refused = api.post(f"/api/v1/faces/{face.pk}/assign", {"identity_id": eileen, "template": True}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "template_limit", refused.content
    assert api.post(f"/api/v1/faces/{face.pk}/assign", {"identity_id": eileen}, format="json").status_code == 200
    assert bare_templates(eileen) == 2

    # Deleting one makes room again.
    template_id = api.get(f"/api/v1/identities/{eileen}/templates").json()["results"][0]["id"]
    assert api.delete(f"/api/v1/identities/{eileen}/templates/{template_id}").status_code == 200
    added = api.post(f"/api/v1/faces/{face.pk}/assign", {"identity_id": eileen, "template": True}, format="json")
    assert added.status_code == 200 and added.json()["identity"]["id"] == eileen, added.content
    assert Template.objects.filter(identity_id=eileen, source_face=face, masked=False).exists()
    assert bare_templates(eileen) == 2


def test_a_face_below_the_template_quality_is_refused_as_low_quality(api, settings):
    settings.FACEINDEX_TEMPLATE_MIN_QUALITY = 0.5
    astronaut = astronaut_bgr()
    tiny = shrunk(astronaut, 0.15)  # a ~13 px face
    quality = max(f.quality for f in get_pipeline().process(cv2.imdecode(np.frombuffer(tiny, np.uint8), cv2.IMREAD_COLOR)))
    assert quality < settings.FACEINDEX_TEMPLATE_MIN_QUALITY
    eileen = new_identity(api, "Eileen")
    refused = enroll_files(api, eileen, {"tiny.jpg": tiny})
    assert refused.status_code == 422, refused.content
    error = refused.json()["results"][0]["error"]
    assert error["code"] == "low_quality" and f"{quality:.2f}" in error["message"]
    assert bare_templates(eileen) == 0 and not Template.objects.filter(identity_id=eileen).exists()

    # The same photo passes when the deployment lowers the minimum below its quality.
    settings.FACEINDEX_TEMPLATE_MIN_QUALITY = quality - 0.01
    assert enroll_files(api, eileen, {"tiny.jpg": tiny}).status_code == 201
    assert bare_templates(eileen) == 1

    # A confirmed face below the minimum is refused too, with the face named.
    settings.FACEINDEX_TEMPLATE_MIN_QUALITY = 0.99
    job = index(api, {"astronaut.jpg": jpeg(astronaut)})
    face = faces_of(job["id"], "astronaut.jpg").get()
    refused = api.post(f"/api/v1/identities/{eileen}/enroll-faces", {"face_ids": [face.pk]}, format="json")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality", refused.content
    assert str(face.pk) in refused.json()["error"]["message"]


def test_templates_listed_and_deleted_over_the_api_then_faces_are_matched_again(api, sample_archive):
    job = index(api, {"hanks-large.jpg": (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()})
    hanks = enroll(api, "Tom", {"hanks.png": (sample_archive.enroll_dir / "Tom Hanks/hanks.png").read_bytes()})
    wait_until(lambda: faces_of(job["id"], "hanks-large.jpg").filter(identity_id=hanks).exists(), what="hanks matched")
    face = faces_of(job["id"], "hanks-large.jpg").get()
    # A second template from an unrelated person's photo: a wrong enrollment the user will undo.
    wrong = enroll_files(api, hanks, {"astronaut.jpg": jpeg(astronaut_bgr())})
    assert wrong.status_code == 201, wrong.content
    wrong_id = wrong.json()["results"][0]["template_id"]

    listed = api.get(f"/api/v1/identities/{hanks}/templates")
    assert listed.status_code == 200
    rows = listed.json()["results"]
    assert [r["id"] for r in rows] == list(Template.objects.filter(identity_id=hanks, masked=False).order_by("id")
                                           .values_list("id", flat=True))
    assert len(rows) == 2 and all(r["quality"] > 0.5 and r["crop_url"] for r in rows)
    assert api.get(f"/api/v1/identities/{hanks}").json()["templates"] == 2
    wrong_template = Template.objects.get(pk=wrong_id)
    assert wrong_template.crop_key in storage.list_keys(f"{api.user.pk}/templates/{hanks}/")

    # Another owner sees none of it.
    other = make_client()
    assert other.get(f"/api/v1/identities/{hanks}/templates").status_code == 404
    assert other.delete(f"/api/v1/identities/{hanks}/templates/{wrong_id}").status_code == 404

    # Deleting the wrong template removes it, its masked companion and its crop.
    deleted = api.delete(f"/api/v1/identities/{hanks}/templates/{wrong_id}")
    assert deleted.status_code == 200 and deleted.json() == {"template_id": wrong_id, "templates_deleted": 2}
    assert not Template.objects.filter(identity_id=hanks, crop_key=wrong_template.crop_key).exists()
    wait_until(lambda: wrong_template.crop_key not in storage.list_keys(f"{api.user.pk}/templates/{hanks}/"),
               what="crop deleted")
    assert api.delete(f"/api/v1/identities/{hanks}/templates/{wrong_id}").status_code == 404

    # Deleting the last template: the face matched through it is re-decided by the same rule (now: unknown).
    right_id = rows[0]["id"] if rows[0]["id"] != wrong_id else rows[1]["id"]
    assert api.delete(f"/api/v1/identities/{hanks}/templates/{right_id}").status_code == 200
    wait_until(lambda: Face.objects.filter(pk=face.pk, identity__isnull=True).exists(), what="face re-decided")
    face.refresh_from_db()
    decision = matching.decide(matching.identity_scores(face.owner_id, face.embedding),
                               rule=matching.match_rule(face.owner_id), quality=face.quality)
    assert decision.identity_id is None and face.similarity == decision.similarity


def test_low_quality_faces_are_not_named_and_say_so(api, settings):
    astronaut = astronaut_bgr()
    eileen = enroll(api, "Eileen", {"astronaut.jpg": jpeg(astronaut)})
    # A ~12 px, slightly blurred face: below the shipped FACEINDEX_MATCH_MIN_QUALITY (the worker's setting).
    job = index(api, {"sharp.jpg": jpeg(cv2.flip(astronaut, 1)), "tiny.jpg": shrunk(cv2.flip(astronaut, 1), 0.15, 0.8)})
    sharp, tiny = faces_of(job["id"], "sharp.jpg").get(), faces_of(job["id"], "tiny.jpg").get()
    assert sharp.identity_id == eileen
    assert tiny.quality < settings.FACEINDEX_MATCH_MIN_QUALITY <= sharp.quality
    assert tiny.identity_id is None and tiny.similarity is not None  # compared, its score kept, not named
    body = api.get(f"/api/v1/faces?job={job['id']}").json()["results"]
    assert {f["image_name"]: f["outcome"] for f in body} == {"sharp.jpg": "named", "tiny.jpg": "low_quality"}
    low = api.get(f"/api/v1/faces?job={job['id']}&outcome=low_quality").json()["results"]
    assert [f["id"] for f in low] == [tiny.pk]
    assert api.get(f"/api/v1/faces?outcome=blurry").status_code == 400
    summary = api.get(f"/api/v1/jobs/{job['id']}/report").json()["summary"]
    assert summary["unknown_faces"] == 1 and summary["low_quality_faces"] == 1

    # Re-matching follows the same rule: under a minimum above the sharp face's quality its
    # match (well above the threshold) is withdrawn as low_quality; under none it is named again.
    settings.FACEINDEX_MATCH_MIN_QUALITY = sharp.quality + 0.01
    services.rematch(owner_id=api.user.pk, face_ids=[sharp.pk])
    sharp.refresh_from_db()
    assert sharp.identity_id is None and sharp.similarity > matching.match_rule(api.user.pk).threshold
    assert matching.face_outcome(sharp.identity_id, sharp.quality) == "low_quality"
    settings.FACEINDEX_MATCH_MIN_QUALITY = 0.0
    services.rematch(owner_id=api.user.pk, face_ids=[sharp.pk])
    sharp.refresh_from_db()
    assert sharp.identity_id == eileen


def test_a_named_cluster_takes_templates_only_while_quality_and_room_allow(api, settings):
    """naming.name_cluster's choice: the best faces that template_refusal accepts, up to the cap."""
    from backend.gallery.models import Identity
    from backend.jobs.models import Image, Job

    rng = np.random.default_rng(9)

    def vector():
        v = rng.normal(size=128).astype(np.float32)
        return (v / np.linalg.norm(v)).tolist()

    job = Job.objects.create(owner=api.user, total_images=1)
    image = Image.objects.create(owner=api.user, job=job, object_key="x.jpg", size_bytes=1, original_name="x.jpg",
                                 status=Image.Status.DONE, width=640, height=480)
    faces = [Face.objects.create(owner=api.user, image=image, ordinal=i, box_x=0, box_y=0, box_w=50, box_h=50,
                                 landmarks=[[0, 0]] * 5, det_score=0.9, quality=q, embedding=vector())
             for i, q in enumerate((0.9, 0.1, 0.8, 0.7))]
    ann = Identity.objects.create(owner=api.user, name="Ann")
    Template.objects.create(owner=api.user, identity=ann, embedding=vector(), quality=0.9)
    settings.FACEINDEX_TEMPLATE_MIN_QUALITY = 0.3
    settings.FACEINDEX_MAX_TEMPLATES_PER_IDENTITY = 5
    assert services.faces_fit_for_templates(ann, faces, limit=5) == [faces[0], faces[2], faces[3]]  # 0.1 refused
    assert services.faces_fit_for_templates(ann, faces, limit=2) == [faces[0], faces[2]]
    settings.FACEINDEX_MAX_TEMPLATES_PER_IDENTITY = 3
    assert services.faces_fit_for_templates(ann, faces, limit=5) == [faces[0], faces[2]]  # room for 2
    settings.FACEINDEX_MAX_TEMPLATES_PER_IDENTITY = 1
    assert services.faces_fit_for_templates(ann, faces, limit=5) == []
