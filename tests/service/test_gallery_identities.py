"""Identities through REST with a real worker: retroactive matching, merge/undo, delete with purge, negatives."""
from __future__ import annotations

import pytest

from backend.core import storage
from backend.gallery.models import Face, Merge, Template

from helpers.api import enroll, files_payload, index
from helpers.gallery import faces_of, gallery_snapshot, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def read(sample, rel: str) -> bytes:
    return (sample.archive_dir / rel).read_bytes()


def enrollment(sample, person: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (sample.enroll_dir / person).iterdir()}


def test_enrolment_finds_faces_indexed_earlier_and_merge_undo_restores_exactly(api, sample_archive):
    job = index(api, {name: read(sample_archive, name) for name in
                      ("2021/hanks-large.jpg", "2020/astronaut-crop.jpg", "2021/hanks-and-collins.jpg")})
    assert Face.objects.filter(image__job_id=job["id"], identity__isnull=False).count() == 0

    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    # Retroactive: the background re-match puts last month's faces on the new identities.
    wait_until(lambda: faces_of(job["id"], "2021/hanks-large.jpg").filter(identity_id=hanks).exists(), what="hanks matched")
    wait_until(lambda: faces_of(job["id"], "2020/astronaut-crop.jpg").filter(identity_id=eileen).exists(), what="eileen matched")
    assert Face.objects.filter(image__job_id=job["id"], identity_id=hanks).count() == 2
    # A "not this person" on one face of the source must survive merge and undo too.
    pair = faces_of(job["id"], "2021/hanks-and-collins.jpg").filter(identity_id=eileen).get()
    assert api.post(f"/api/v1/faces/{pair.pk}/reject", {"identity_id": hanks}, format="json").status_code == 200

    before = gallery_snapshot(api.user)
    merged = api.post(f"/api/v1/identities/{eileen}/merge", {"source_id": hanks}, format="json")
    assert merged.status_code == 201, merged.content
    body = merged.json()
    assert body["source"] == {"id": hanks, "name": "Tom"} and body["templates_moved"] == 1
    assert api.get(f"/api/v1/identities/{hanks}").status_code == 404
    assert Face.objects.filter(image__job_id=job["id"], identity_id=eileen).count() == 4
    assert Template.objects.filter(identity_id=eileen, masked=False).count() == 2
    assert api.get("/api/v1/merges").json()["count"] == 1
    assert gallery_snapshot(api.user) != before

    undone = api.post(f"/api/v1/merges/{body['id']}/undo")
    assert undone.status_code == 200, undone.content
    assert undone.json()["id"] == hanks and undone.json()["name"] == "Tom"
    assert gallery_snapshot(api.user) == before
    assert not Merge.objects.filter(owner=api.user).exists()
    assert api.post(f"/api/v1/merges/{body['id']}/undo").status_code == 404


def test_undo_of_a_merge_keeps_a_face_the_user_moved_after_the_merge(api, sample_archive):
    job = index(api, {name: read(sample_archive, name) for name in ("2021/hanks-large.jpg", "2021/hanks-and-collins.jpg")})
    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    wait_until(lambda: Face.objects.filter(image__job_id=job["id"], identity_id=hanks).count() == 2, what="hanks matched")
    large = faces_of(job["id"], "2021/hanks-large.jpg").get()
    pair = faces_of(job["id"], "2021/hanks-and-collins.jpg").filter(identity_id=hanks).get()
    merge = api.post(f"/api/v1/identities/{eileen}/merge", {"source_id": hanks}, format="json").json()

    # After the merge the user moves one of Tom's former faces to a third identity.
    other = api.post("/api/v1/identities", {"name": "Look-alike"}, format="json").json()["id"]
    moved = api.post(f"/api/v1/faces/{large.pk}/assign", {"identity_id": other}, format="json")
    assert moved.status_code == 200, moved.content

    assert api.post(f"/api/v1/merges/{merge['id']}/undo").status_code == 200
    large.refresh_from_db()
    pair.refresh_from_db()
    assert (large.identity_id, large.identity_locked) == (other, True)  # the later decision stands
    assert pair.identity_id == hanks  # the face nobody touched goes back


def test_rename_and_enroll_from_detected_faces(api, sample_archive):
    job = index(api, {"hanks-large.jpg": read(sample_archive, "2021/hanks-large.jpg")})
    face = Face.objects.get(image__job_id=job["id"])
    identity = api.post("/api/v1/identities", {"name": "T. Hanks"}, format="json").json()["id"]
    renamed = api.patch(f"/api/v1/identities/{identity}", {"name": "Tom Hanks"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Tom Hanks"
    assert api.patch(f"/api/v1/identities/{identity}", {"name": "  "}, format="json").status_code == 400

    enrolled = api.post(f"/api/v1/identities/{identity}/enroll-faces", {"face_ids": [face.pk]}, format="json")
    assert enrolled.status_code == 201, enrolled.content
    template = Template.objects.get(pk=enrolled.json()["template_ids"][0])
    assert template.source_face_id == face.pk and template.crop_key != face.crop_key
    assert storage.get_bytes(template.crop_key) == storage.get_bytes(face.crop_key)
    face.refresh_from_db()
    assert (face.identity_id, face.identity_locked) == (identity, True)
    listed = api.get(f"/api/v1/identities/{identity}/faces").json()
    assert [f["id"] for f in listed["results"]] == [face.pk]
    # Faces of another owner, or that do not exist, cannot be enrolled.
    assert api.post(f"/api/v1/identities/{identity}/enroll-faces", {"face_ids": [face.pk + 10_000]}, format="json").status_code == 404


def test_delete_purges_templates_rows_and_objects_and_frees_faces(api, sample_archive):
    job = index(api, {name: read(sample_archive, name) for name in ("2021/hanks-large.jpg", "2020/astronaut-crop.jpg")})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    hanks_face = wait_until(lambda: faces_of(job["id"], "2021/hanks-large.jpg").filter(identity_id=hanks).first(), what="match")
    api.post(f"/api/v1/identities/{hanks}/enroll-faces", {"face_ids": [hanks_face.pk]}, format="json")
    prefix = f"{api.user.pk}/templates/{hanks}/"
    template_keys = set(Template.objects.filter(identity_id=hanks).values_list("crop_key", flat=True))
    assert len(template_keys) == 2 and template_keys <= set(storage.list_keys(prefix))

    deleted = api.delete(f"/api/v1/identities/{hanks}")
    assert deleted.status_code == 200, deleted.content
    assert deleted.json()["templates_deleted"] == 2 and deleted.json()["faces_unassigned"] == 1
    assert storage.list_keys(prefix) == []
    assert not Template.objects.filter(owner=api.user).exists()
    hanks_face.refresh_from_db()
    assert hanks_face.identity_id is None and hanks_face.crop_key in storage.list_keys(f"{api.user.pk}/crops/")
    assert api.get(f"/api/v1/identities/{hanks}").status_code == 404

    # Erasure: purge_faces also removes the person's faces and their crops.
    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    face = wait_until(lambda: faces_of(job["id"], "2020/astronaut-crop.jpg").filter(identity_id=eileen).first(), what="match")
    erased = api.delete(f"/api/v1/identities/{eileen}?purge_faces=true").json()
    assert erased["faces_deleted"] == 1 and not Face.objects.filter(pk=face.pk).exists()
    keys = set(storage.list_keys(f"{api.user.pk}/"))
    assert face.crop_key not in keys and not any(k.startswith(f"{api.user.pk}/templates/") for k in keys)


def test_not_this_person_is_respected_by_later_matching(api, sample_archive):
    job = index(api, {name: read(sample_archive, name) for name in ("2021/hanks-large.jpg", "2020/astronaut-crop.jpg")})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    face = wait_until(lambda: faces_of(job["id"], "2021/hanks-large.jpg").filter(identity_id=hanks).first(), what="match")

    rejected = api.post(f"/api/v1/faces/{face.pk}/reject", {}, format="json")
    assert rejected.status_code == 200 and rejected.json()["identity"] is None
    # Enrol the very photo the face comes from: its similarity to Tom is now ~1 ...
    more = api.post(f"/api/v1/identities/{hanks}/enroll", files_payload({"large.jpg": read(sample_archive, "2021/hanks-large.jpg")}),
                    format="multipart")
    assert more.status_code == 201
    # ... and a later enrolment's re-match (queued behind it on the one worker) proves the re-match ran.
    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    wait_until(lambda: faces_of(job["id"], "2020/astronaut-crop.jpg").filter(identity_id=eileen).exists(), what="later re-match")
    face.refresh_from_db()
    assert face.identity_id is None

    # Moving it by hand is the user's call and clears the negative.
    moved = api.post(f"/api/v1/faces/{face.pk}/assign", {"identity_id": hanks}, format="json")
    assert moved.status_code == 200 and moved.json()["identity"]["id"] == hanks
    assert moved.json()["similarity"] > 0.9
    face.refresh_from_db()
    assert face.identity_locked and not face.rejections.exists()
