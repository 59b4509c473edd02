"""1:1 verify, 1:N search, missed-face tagging and owner isolation of every gallery endpoint."""
from __future__ import annotations

import io

import pytest

from backend.core import storage
from backend.core.pipeline import get_pipeline
from backend.gallery.models import Face
from backend.jobs.models import Image
from ml.package_images import read_package_image

from helpers.api import enroll, index, make_client
from helpers.gallery import faces_of, small_face_in_large_photo, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def named(name: str, data: bytes):
    buf = io.BytesIO(data)
    buf.name = name
    return buf


def enrollment(sample, person: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (sample.enroll_dir / person).iterdir()}


def test_verify_two_images_and_image_against_identity(api, sample_archive):
    hanks_large = (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()
    hanks_png = (sample_archive.enroll_dir / "Tom Hanks/hanks.png").read_bytes()
    astronaut = (sample_archive.archive_dir / "2020/astronaut-crop.jpg").read_bytes()
    threshold = get_pipeline().threshold

    same = api.post("/api/v1/verify", {"file_a": named("a.jpg", hanks_large), "file_b": named("b.png", hanks_png)}, format="multipart")
    assert same.status_code == 200, same.content
    assert same.json()["same"] is True and same.json()["threshold"] == threshold and same.json()["similarity"] > threshold
    different = api.post("/api/v1/verify", {"file_a": named("a.jpg", hanks_large), "file_b": named("b.jpg", astronaut)}, format="multipart").json()
    assert different["same"] is False and different["similarity"] < threshold

    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    vs_identity = api.post("/api/v1/verify", {"file_a": named("a.jpg", astronaut), "identity_id": eileen}, format="multipart").json()
    assert vs_identity["same"] is True and vs_identity["identity"] == {"id": eileen, "name": "Eileen"}
    not_her = api.post("/api/v1/verify", {"file_a": named("a.jpg", hanks_large), "identity_id": eileen}, format="multipart").json()
    assert not_her["same"] is False

    no_face = api.post("/api/v1/verify", {"file_a": named("a.jpg", (sample_archive.archive_dir / "2021/no-face.jpg").read_bytes()),
                                          "file_b": named("b.png", hanks_png)}, format="multipart")
    assert no_face.status_code == 422 and no_face.json()["error"] == {"code": "no_face", "message": "no face found in a.jpg", "field": "file_a"}
    assert api.post("/api/v1/verify", {"file_a": named("a.jpg", hanks_large)}, format="multipart").status_code == 400


def test_search_returns_top_identities_and_faces(api, sample_archive):
    archive = sample_archive.archive_dir
    job = index(api, {n: (archive / n).read_bytes() for n in ("2021/hanks-large.jpg", "2021/hanks-and-collins.jpg", "2019/group.jpg")})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    eileen = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    wait_until(lambda: Face.objects.filter(owner=api.user, identity_id=eileen).exists(), what="re-match")

    probe = (sample_archive.enroll_dir / "Tom Hanks/hanks.png").read_bytes()
    found = api.post("/api/v1/search", {"file": named("q.png", probe), "k": 3}, format="multipart")
    assert found.status_code == 200, found.content
    body = found.json()
    assert body["ef_search"] >= 40 and len(body["results"]) == 1
    result = body["results"][0]
    assert result["match"] == {"id": hanks, "name": "Tom"}
    assert [i["id"] for i in result["identities"]] == [hanks, eileen]
    assert result["identities"][0]["above_threshold"] and not result["identities"][1]["above_threshold"]
    assert len(result["faces"]) == 3
    top_two = {f["image"] for f in result["faces"][:2]}
    assert top_two == {"hanks-large.jpg", "hanks-and-collins.jpg"}
    assert result["faces"][0]["similarity"] >= result["faces"][1]["similarity"] >= result["faces"][2]["similarity"]
    assert result["faces"][2]["similarity"] < body["threshold"]

    group = api.post("/api/v1/search", {"file": named("g.jpg", (archive / "2019/group.jpg").read_bytes()), "faces": "all", "k": 1},
                     format="multipart").json()
    assert len(group["results"]) == 6
    # Each face of the group photo finds itself (indexed above) first.
    indexed = set(faces_of(job["id"], "group.jpg").values_list("id", flat=True))
    assert {r["faces"][0]["face_id"] for r in group["results"]} == indexed
    assert all(r["faces"][0]["similarity"] > 0.99 for r in group["results"])
    assert api.post("/api/v1/search", {"file": named("q.png", probe), "k": 0}, format="multipart").status_code == 400


def test_tag_a_face_the_detector_missed(api, sample_archive):
    photo, box = small_face_in_large_photo(read_package_image("Tom_Hanks_54745.png"))
    job = index(api, {"crowd.jpg": photo})
    image = Image.objects.get(job_id=job["id"])
    assert image.status == Image.Status.DONE and not image.faces.exists()  # too small for the detector
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))

    tagged = api.post(f"/api/v1/images/{image.pk}/faces", {"box": box}, format="json")
    assert tagged.status_code == 201, tagged.content
    face = Face.objects.get(pk=tagged.json()["id"])
    assert face.manual and face.identity_id == hanks and face.similarity >= get_pipeline().threshold
    assert tagged.json()["identity"] == {"id": hanks, "name": "Tom"}
    assert face.crop_key in storage.list_keys(f"{api.user.pk}/crops/{image.pk}/")
    # Stored like a detected face: listed, and found by search.
    assert face.pk in [f["id"] for f in api.get("/api/v1/faces", {"image": image.pk}).json()["results"]]

    bad = api.post(f"/api/v1/images/{image.pk}/faces", {"box": [-5, 0, 40, 40]}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "box"


def test_owners_never_reach_each_others_gallery(api, sample_archive):
    archive = sample_archive.archive_dir
    job = index(api, {n: (archive / n).read_bytes() for n in ("2021/hanks-large.jpg", "2019/group.jpg", "2019/group-mirrored.jpg")})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    face = wait_until(lambda: faces_of(job["id"], "hanks-large.jpg").filter(identity_id=hanks).first(), what="match")
    other_identity = enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    merge_id = api.post(f"/api/v1/identities/{hanks}/merge", {"source_id": other_identity}, format="json").json()["id"]
    clusters = api.get("/api/v1/clusters").json()
    assert clusters["count"] >= 1
    cluster_id = clusters["results"][0]["id"]
    image_id = face.image_id

    other = make_client()
    not_found = [
        ("patch", f"/api/v1/identities/{hanks}", {"name": "x"}),
        ("delete", f"/api/v1/identities/{hanks}", None),
        ("post", f"/api/v1/identities/{hanks}/enroll-faces", {"face_ids": [face.pk]}),
        ("post", f"/api/v1/identities/{hanks}/merge", {"source_id": hanks}),
        ("post", f"/api/v1/merges/{merge_id}/undo", None),
        ("post", f"/api/v1/faces/{face.pk}/assign", {"identity_id": hanks}),
        ("post", f"/api/v1/faces/{face.pk}/reject", {"identity_id": hanks}),
        ("post", f"/api/v1/images/{image_id}/faces", {"box": [10, 10, 50, 50]}),
        ("get", f"/api/v1/clusters/{cluster_id}", None),
        ("post", f"/api/v1/clusters/{cluster_id}/name", {"name": "x"}),
    ]
    for method, url, body in not_found:
        response = getattr(other, method)(url, body, format="json") if body is not None else getattr(other, method)(url)
        assert response.status_code == 404, (method, url, response.content)
    # The other owner's own identity cannot take faces, or merge identities, of mine.
    theirs = other.post("/api/v1/identities", {"name": "Mine"}, format="json").json()["id"]
    assert other.post(f"/api/v1/identities/{theirs}/merge", {"source_id": hanks}, format="json").status_code == 404
    assert other.post(f"/api/v1/identities/{theirs}/enroll-faces", {"face_ids": [face.pk]}, format="json").status_code == 404
    assert other.post(f"/api/v1/faces/{face.pk}/assign", {"identity_id": theirs}, format="json").status_code == 404
    for url in ("/api/v1/merges", "/api/v1/clusters"):
        assert other.get(url).json()["count"] == 0, url
    probe = named("q.png", (sample_archive.enroll_dir / "Tom Hanks/hanks.png").read_bytes())
    searched = other.post("/api/v1/search", {"file": probe}, format="multipart").json()["results"][0]
    assert searched["identities"] == [] and searched["faces"] == []
    probe.seek(0)
    assert other.post("/api/v1/verify", {"file_a": probe, "identity_id": hanks}, format="multipart").status_code == 404
    # Nothing of mine changed.
    face.refresh_from_db()
    assert face.identity_id == hanks and api.get(f"/api/v1/identities/{hanks}").json()["name"] == "Tom"
