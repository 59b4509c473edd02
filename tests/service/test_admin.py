"""The Django admin as staff: pages render with crops, actions go through the gallery services; others are refused."""
from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.test import Client

from backend.core import storage
from backend.gallery.models import Identity, Merge, Template, UnknownCluster

from helpers.api import enroll, index

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def staff_client(user) -> Client:
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def test_admin_staff_manage_identities_clusters_and_jobs(api, sample_archive):
    archive = sample_archive.archive_dir
    job = index(api, {n: (archive / n).read_bytes() for n in ("2021/hanks-large.jpg", "2019/group.jpg", "2019/group-mirrored.jpg",
                                                              "broken/notes.txt")})
    files = {p.name: p.read_bytes() for p in (sample_archive.enroll_dir / "Tom Hanks").iterdir()}
    hanks = enroll(api, "Tom", files)
    duplicate = enroll(api, "Tom H.", files)
    admin = staff_client(api.user)

    page = admin.get("/admin/gallery/identity/", {"q": "Tom"})
    assert page.status_code == 200 and b"Tom H." in page.content and b'<img src="http' in page.content
    detail = admin.get(f"/admin/gallery/identity/{hanks}/change/")
    assert detail.status_code == 200 and b'<img src="http' in detail.content and b"sha256:" in detail.content

    # Merge action: an intermediate page, then the merge.
    selected = {"action": "merge_selected", ACTION_CHECKBOX_NAME: [hanks, duplicate]}
    confirm = admin.post("/admin/gallery/identity/", selected)
    assert confirm.status_code == 200 and b'name="target"' in confirm.content
    done = admin.post("/admin/gallery/identity/", {**selected, "apply": "1", "target": hanks}, follow=True)
    assert done.status_code == 200 and not Identity.objects.filter(pk=duplicate).exists()
    merge = Merge.objects.get(owner=api.user)
    assert admin.get("/admin/gallery/merge/").status_code == 200
    admin.post("/admin/gallery/merge/", {"action": "undo_selected", ACTION_CHECKBOX_NAME: [merge.pk]}, follow=True)
    assert Identity.objects.get(pk=duplicate).name == "Tom H." and not Merge.objects.exists()

    # Delete with purge: rows and template crops go.
    keys = list(Template.objects.filter(identity_id=duplicate).values_list("crop_key", flat=True))
    admin.post("/admin/gallery/identity/", {"action": "delete_with_purge", ACTION_CHECKBOX_NAME: [duplicate]}, follow=True)
    assert not Identity.objects.filter(pk=duplicate).exists() and not set(keys) & set(storage.list_keys(f"{api.user.pk}/"))

    # Unknown clusters: listed with crops, named through the action's form.
    clusters = admin.get("/admin/gallery/unknowncluster/")
    assert clusters.status_code == 200 and b'<img src="http' in clusters.content
    cluster = UnknownCluster.objects.filter(owner=api.user).first()
    assert admin.get(f"/admin/gallery/unknowncluster/{cluster.pk}/change/").status_code == 200
    form = admin.post("/admin/gallery/unknowncluster/", {"action": "name_cluster", ACTION_CHECKBOX_NAME: [cluster.pk]})
    assert form.status_code == 200 and b'name="name"' in form.content
    members = set(cluster.faces.values_list("id", flat=True))
    admin.post("/admin/gallery/unknowncluster/", {"action": "name_cluster", ACTION_CHECKBOX_NAME: [cluster.pk], "apply": "1",
                                                  "name": "Guest"}, follow=True)
    guest = Identity.objects.get(owner=api.user, name="Guest")
    assert set(guest.faces.values_list("id", flat=True)) == members

    # Jobs with status and per-image errors.
    jobs = admin.get("/admin/jobs/job/")
    assert jobs.status_code == 200 and b"completed" in jobs.content
    job_page = admin.get(f"/admin/jobs/job/{job['id']}/change/")
    assert job_page.status_code == 200 and b"unsupported_format" in job_page.content
    assert b"unsupported_format" in admin.get("/admin/jobs/image/", {"status": "failed"}).content


def test_admin_refuses_non_staff_and_hides_other_owners(api, sample_archive):
    identity = enroll(api, "Tom", {p.name: p.read_bytes() for p in (sample_archive.enroll_dir / "Tom Hanks").iterdir()})
    plain = Client()
    plain.force_login(api.user)  # not staff
    for url in ("/admin/", "/admin/gallery/identity/", f"/admin/gallery/identity/{identity}/change/", "/admin/jobs/job/"):
        response = plain.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    assert Client().get("/admin/gallery/identity/").status_code == 302

    other_staff = staff_client(get_user_model().objects.create_user("other-staff", password="pw"))
    listing = other_staff.get("/admin/gallery/identity/")
    assert listing.status_code == 200 and b"Tom" not in listing.content
    assert other_staff.get(f"/admin/gallery/identity/{identity}/change/").status_code == 302  # "does not exist" redirect
    other_staff.post("/admin/gallery/identity/", {"action": "delete_with_purge", ACTION_CHECKBOX_NAME: [identity]})
    assert Identity.objects.filter(pk=identity).exists()
