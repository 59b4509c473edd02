"""Web pages through Django's test client: owner isolation, login, and a fixed query count per page."""
from __future__ import annotations

import io
import re
import uuid

import numpy as np
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from backend.gallery.models import Face, Identity, Merge, UnknownCluster
from backend.jobs.models import Image, Job

pytestmark = pytest.mark.django_db


def make_user(name: str | None = None):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=name or f"u-{uuid.uuid4().hex[:8]}", password="pw")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def unit_vector(rng) -> list[float]:
    v = rng.normal(size=128).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def add_photo(owner, job, rng, faces: list[Identity | None], cluster: UnknownCluster | None = None) -> Image:
    image = Image.objects.create(owner=owner, job=job, object_key=f"{owner.pk}/x/{uuid.uuid4().hex}.jpg", size_bytes=1000,
                                 original_name=f"{uuid.uuid4().hex[:6]}.jpg", status=Image.Status.DONE, width=640, height=480)
    for ordinal, identity in enumerate(faces, start=1):
        Face.objects.create(owner=owner, image=image, ordinal=ordinal, box_x=10 * ordinal, box_y=20, box_w=50, box_h=60,
                            landmarks=[[0, 0]] * 5, det_score=0.9, quality=rng.random(), embedding=unit_vector(rng),
                            identity=identity, similarity=0.6 if identity else None, crop_key=f"{owner.pk}/crops/{uuid.uuid4().hex}.jpg",
                            cluster=cluster if identity is None else None, cluster_checked=True)
    return image


def queries_for(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(captured)


def test_pages_need_sign_in_and_the_login_page_signs_in():
    user = make_user("alice")
    client = Client()
    response = client.get("/people/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200 and b"didn't match" in response.content
    response = client.post("/login/", {"username": "alice", "password": "pw"}, follow=True)
    assert response.redirect_chain[-1][0] == "/" and b"Sign out alice" in response.content
    assert user.pk == int(client.session["_auth_user_id"])


def test_forms_are_csrf_protected():
    user = make_user()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/people/new/", {"name": "Ann"}).status_code == 403
    assert not Identity.objects.filter(owner=user).exists()


def test_people_page_query_count_does_not_grow_with_people(rng=np.random.default_rng(1)):
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=0)
    client = signed_in(owner)
    people = [Identity.objects.create(owner=owner, name=f"Person {i:02d}") for i in range(3)]
    for person in people:
        add_photo(owner, job, rng, [person, None])
    few = queries_for(client, "/people/")
    people += [Identity.objects.create(owner=owner, name=f"Person {i:02d}") for i in range(3, 20)]
    for person in people[3:]:
        add_photo(owner, job, rng, [person])
        add_photo(owner, job, rng, [person, person])
    many = queries_for(client, "/people/")
    assert many == few
    body = client.get("/people/").content.decode()
    assert body.count('class="person-card"') == 20
    assert "3 photos" not in body and "2 photos" in body and "1 photo<" in body
    assert "X-Amz-Expires=300" in body  # covers are short-lived presigned crop URLs
    searched = client.get("/people/", {"q": "person 1"}).content.decode()
    assert searched.count('class="person-card"') == 10


def test_person_page_query_count_does_not_grow_with_appearances(rng=np.random.default_rng(2)):
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=0)
    client = signed_in(owner)
    ann, bob = Identity.objects.create(owner=owner, name="Ann"), Identity.objects.create(owner=owner, name="Bob")
    add_photo(owner, job, rng, [ann, bob])
    Merge.objects.create(owner=owner, target=ann, source_id=999, source_name="Old Ann",
                         source_created_at="2020-01-01T00:00Z", source_updated_at="2020-01-01T00:00Z")
    few = queries_for(client, f"/people/{ann.pk}/")
    for _ in range(30):
        add_photo(owner, job, rng, [ann, bob, None])
    many = queries_for(client, f"/people/{ann.pk}/")
    assert many == few
    body = client.get(f"/people/{ann.pk}/").content.decode()
    assert body.count('class="thumb"') == 24 and "page 1 of 2" in body  # paginated
    assert f'href="/people/{bob.pk}/">Bob</a> · 31 photos' in body  # co-occurring
    assert "Old Ann" in body  # merges into this person, with undo


def test_unknown_page_query_count_does_not_grow_with_clusters(rng=np.random.default_rng(3)):
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=0)
    client = signed_in(owner)
    for _ in range(2):
        cluster = UnknownCluster.objects.create(owner=owner)
        for _ in range(3):
            add_photo(owner, job, rng, [None], cluster=cluster)
    few = queries_for(client, "/unknown/")
    for size in range(2, 10):
        cluster = UnknownCluster.objects.create(owner=owner)
        for _ in range(size):
            add_photo(owner, job, rng, [None], cluster=cluster)
    many = queries_for(client, "/unknown/")
    assert many == few
    body = client.get("/unknown/").content.decode()
    sizes = [int(s.split(" faces")[0]) for s in body.split("<h2>")[1:] if " faces</h2>" in s]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 9  # largest first
    assert body.count('class="thumb"') <= 12 * 6


def test_another_owner_sees_none_of_it(rng=np.random.default_rng(4)):
    owner, stranger = make_user(), make_user()
    job = Job.objects.create(owner=owner, total_images=1)
    ann = Identity.objects.create(owner=owner, name="Ann Owner")
    image = add_photo(owner, job, rng, [ann])
    face = image.faces.get()
    client = signed_in(stranger)
    for url in (f"/people/{ann.pk}/", f"/photos/{image.pk}/", f"/photos/{image.pk}/image.jpg", f"/jobs/{job.pk}/",
                f"/people/{ann.pk}/delete/"):
        assert client.get(url).status_code == 404, url
    assert "Ann Owner" not in client.get("/people/").content.decode()
    assert client.post(f"/faces/{face.pk}/assign/", {"person": "Ann Owner"}).status_code == 404
    assert client.post(f"/people/{ann.pk}/delete/", {"purge_faces": "1"}).status_code == 404
    assert Identity.objects.filter(pk=ann.pk).exists()
    # The owner sees the photo with the face labelled.
    body = signed_in(owner).get(f"/photos/{image.pk}/").content.decode()
    assert "Ann Owner 0.60" in body


def test_assign_by_typed_name_and_a_service_refusal_becomes_a_message(rng=np.random.default_rng(5)):
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=1)
    ann = Identity.objects.create(owner=owner, name="Ann")
    image = add_photo(owner, job, rng, [None])
    face = image.faces.get()
    client = signed_in(owner)
    response = client.post(f"/faces/{face.pk}/assign/", {"person": "Nobody"}, HTTP_REFERER=f"http://testserver/photos/{image.pk}/",
                           follow=True)
    assert response.redirect_chain[-1][0] == f"http://testserver/photos/{image.pk}/"
    assert "nobody is called &#x27;Nobody&#x27;" in response.content.decode()
    client.post(f"/faces/{face.pk}/assign/", {"person": "ann"})
    face.refresh_from_db()
    assert face.identity_id == ann.pk and face.identity_locked


def test_not_this_person_and_removing_a_face_from_a_cluster(rng=np.random.default_rng(6)):
    from backend.gallery.models import Rejection

    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=3)
    ann = Identity.objects.create(owner=owner, name="Ann")
    face = add_photo(owner, job, rng, [ann]).faces.get()
    client = signed_in(owner)
    response = client.post(f"/faces/{face.pk}/reject/", follow=True)
    assert "Not Ann: this face is now unknown" in response.content.decode()
    face.refresh_from_db()
    assert face.identity_id is None and Rejection.objects.filter(face=face, identity=ann).exists()

    cluster = UnknownCluster.objects.create(owner=owner)
    a, b = (add_photo(owner, job, rng, [None], cluster=cluster).faces.get() for _ in range(2))
    response = client.post(f"/unknown/{cluster.pk}/remove/{a.pk}/", follow=True)
    assert response.status_code == 200 and "Removed the face" in response.content.decode()
    a.refresh_from_db(), b.refresh_from_db()
    assert a.cluster_id is None and a.cluster_checked
    assert not UnknownCluster.objects.filter(pk=cluster.pk).exists() and b.cluster_id is None  # one face is no group


def test_cancel_a_running_job_from_its_page():
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=5, status=Job.Status.RUNNING)
    client = signed_in(owner)
    assert 'id="job-cancel"' in client.get(f"/jobs/{job.pk}/").content.decode()
    body = client.post(f"/jobs/{job.pk}/cancel/", follow=True).content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and "is cancelled" in body and 'id="job-cancel"' not in body


def _upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def test_enroll_then_search_by_photo_and_verify_two_photos():
    import cv2

    from ml.package_images import astronaut_bgr, read_package_image

    astronaut = cv2.imencode(".jpg", astronaut_bgr())[1].tobytes()
    astronaut_crop = cv2.imencode(".jpg", astronaut_bgr()[0:300, 80:420])[1].tobytes()
    hanks = cv2.imencode(".jpg", read_package_image("Tom_Hanks_54745.png"))[1].tobytes()
    owner = make_user()
    client = signed_in(owner)
    response = client.post("/people/new/", {"name": "Eileen", "files": [_upload("a.jpg", astronaut)]}, follow=True)
    assert "Enrolled 1 photo(s) of Eileen" in response.content.decode()

    body = client.post("/search/", {"file": _upload("probe.jpg", astronaut_crop)}).content.decode()
    assert re.search(r"Face 1: <a href=\"/people/\d+/\">Eileen</a>", body)
    assert re.search(r"Eileen</a> <span class=\"score\">0\.\d{3}</span> ✓", body)

    same = client.post("/verify/", {"file_a": _upload("a.jpg", astronaut), "file_b": _upload("b.jpg", astronaut_crop)})
    assert "Same person" in same.content.decode() and "threshold 0." in same.content.decode()
    different = client.post("/verify/", {"file_a": _upload("a.jpg", astronaut), "file_b": _upload("h.jpg", hanks)})
    assert "Different people" in different.content.decode()
    no_face = client.post("/verify/", {"file_a": _upload("a.txt", b"not an image"), "file_b": _upload("h.jpg", hanks)}, follow=True)
    assert 'class="error"' in no_face.content.decode()


def test_the_photo_is_shown_upright_after_exif_rotation():
    import cv2
    from PIL import Image as PILImage

    from backend.core import storage

    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=1)
    upright = np.zeros((120, 200, 3), np.uint8)
    upright[:, :100] = (0, 0, 255)  # left half red (BGR), right half black
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # stored 120 wide, 200 high
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    PILImage.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(buffer, format="JPEG", exif=exif.tobytes())
    key = f"{owner.pk}/test/{uuid.uuid4().hex}.jpg"
    storage.ensure_bucket()
    storage.put_bytes(key, buffer.getvalue(), "image/jpeg")
    image = Image.objects.create(owner=owner, job=job, object_key=key, size_bytes=len(buffer.getvalue()), original_name="r.jpg",
                                 status=Image.Status.DONE, width=200, height=120)
    response = signed_in(owner).get(f"/photos/{image.pk}/image.jpg")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    shown = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (120, 200)
    assert shown[60, 30, 2] > 200 and shown[60, 170].max() < 40  # red on the left, as the camera saw it
    storage.delete_keys([key])


def test_import_from_an_allowed_folder_and_a_refused_one(tmp_path, settings):
    import cv2

    from ml.package_images import astronaut_bgr

    allowed = tmp_path / "photos"
    allowed.mkdir()
    cv2.imwrite(str(allowed / "a.jpg"), astronaut_bgr())
    settings.FACEINDEX_IMPORT_ROOTS = [str(allowed)]
    owner = make_user()
    client = signed_in(owner)
    assert str(allowed) in client.get("/").content.decode()  # the page says which sources are allowed
    response = client.post("/import/", {"source": str(allowed)})
    job = Job.objects.get(owner=owner)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.source == "folder" and job.total_images == 1
    refused = client.post("/import/", {"source": str(tmp_path)}, HTTP_REFERER="http://testserver/", follow=True)
    assert 'class="error"' in refused.content.decode() and Job.objects.filter(owner=owner).count() == 1


JUNK_FORMS = [{}, {"name": ""}, {"name": "x" * 300}, {"person": "x" * 300}, {"identity_id": "abc"},
              {"identity_id": str(2**63)}, {"identity_id": "-1"}, {"identity_id": "²"}, {"x": "nan", "y": "1", "w": "inf", "h": "9"},
              {"x": "a"}, {"source": "ftp://nowhere"}, {"source": "relative/path"}, {"purge_faces": "1", "name": "\x00"}]


def test_person_page_lists_templates_and_removes_one(rng=np.random.default_rng(8)):
    from backend.gallery.models import Template

    owner, other = make_user(), make_user()
    ann = Identity.objects.create(owner=owner, name="Ann")
    kept, wrong = (Template.objects.create(owner=owner, identity=ann, embedding=unit_vector(rng), quality=q,
                                           crop_key=f"{owner.pk}/templates/{ann.pk}/{uuid.uuid4().hex}.jpg")
                   for q in (0.91, 0.42))
    body = signed_in(owner).get(f"/people/{ann.pk}/").content.decode()
    assert body.count("template-tile") == 2 and "quality 0.42" in body
    url = f"/people/{ann.pk}/templates/{wrong.pk}/delete/"
    assert signed_in(other).post(url).status_code == 404
    response = signed_in(owner).post(url)
    assert response.status_code == 302 and response["Location"] == f"/people/{ann.pk}/"
    assert list(Template.objects.filter(identity=ann).values_list("id", flat=True)) == [kept.pk]
    assert signed_in(owner).post(url).status_code == 404


def test_no_form_answers_junk_with_a_server_error(rng=np.random.default_rng(7)):
    owner = make_user()
    job = Job.objects.create(owner=owner, total_images=1)
    ann = Identity.objects.create(owner=owner, name="Ann")
    cluster = UnknownCluster.objects.create(owner=owner)
    image = add_photo(owner, job, rng, [ann, None], cluster=cluster)
    face = image.faces.filter(identity=ann).get()
    merge = Merge.objects.create(owner=owner, target=ann, source_id=10**9, source_name="Gone",
                                 source_created_at="2020-01-01T00:00Z", source_updated_at="2020-01-01T00:00Z")
    client = signed_in(owner)
    client.raise_request_exception = False
    urls = ["/upload/", "/import/", f"/jobs/{job.pk}/cancel/", f"/photos/{image.pk}/tag/", f"/faces/{face.pk}/assign/",
            f"/faces/{face.pk}/new-person/", "/people/new/", f"/people/{ann.pk}/rename/", f"/people/{ann.pk}/merge/",
            f"/people/{ann.pk}/enroll/", f"/merges/{merge.pk}/undo/", f"/unknown/{cluster.pk}/name/",
            f"/unknown/{cluster.pk}/remove/{face.pk}/", "/search/", "/verify/", f"/faces/{face.pk}/reject/",
            f"/people/{ann.pk}/templates/999999/delete/"]
    errors = [(url, form, response.status_code) for url in urls for form in JUNK_FORMS
              if (response := client.post(url, form)).status_code >= 500]
    errors += [(url, "GET", response.status_code) for url in ("/people/?page=abc", "/unknown/?page=-1", f"/jobs/{job.pk}/?page=x")
               if (response := client.get(url)).status_code >= 500]
    assert not errors, errors
    assert Identity.objects.filter(owner=owner, name="x" * 300).count() == 0
