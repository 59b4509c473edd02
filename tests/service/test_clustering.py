"""Unknown-face clustering on real faces: transformed copies of one person group, different people separate."""
from __future__ import annotations

import itertools

import cv2
import pytest

from backend.gallery.models import Face, Template, UnknownCluster

from helpers.api import index
from helpers.gallery import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]

GROUP_COPIES = ("2019/group.jpg", "2019/group-mirrored.jpg", "2019/group-small-lowq.jpg")


def test_unknown_faces_cluster_by_person_and_a_named_cluster_becomes_an_identity(api, sample_archive):
    job = index(api, {name: (sample_archive.archive_dir / name).read_bytes() for name in GROUP_COPIES})
    faces = list(Face.objects.filter(image__job_id=job["id"]))
    assert len(faces) == 18 and all(f.identity_id is None for f in faces)

    listed = api.get("/api/v1/clusters").json()
    # Six people, each seen in the three copies (mirrored, shrunk and re-compressed).
    assert listed["count"] == 6, listed
    assert sorted(c["size"] for c in listed["results"]) == [3] * 6
    by_cluster = {c["id"]: list(Face.objects.filter(cluster_id=c["id"])) for c in listed["results"]}
    for members in by_cluster.values():
        # One face from each copy: never two people of the same photo together.
        assert len({f.image_id for f in members}) == 3
        # And the same place in the photo (mirrored x for the flipped copy), so the same person.
        centres = []
        for face in members:
            name = face.image.original_name
            scale = 0.7 if "small" in name else 1.0
            cx = (face.box_x + face.box_w / 2) / scale
            if "mirrored" in name:
                cx = face.image.width - cx
            centres.append(cx)
        assert max(centres) - min(centres) < 25, centres
    assert all(len(c["samples"]) == 3 and c["samples"][0]["crop_url"].startswith("http") for c in listed["results"])

    # Naming a cluster: a new identity, all its faces follow, its faces become templates.
    cluster_id, members = next(iter(by_cluster.items()))
    named = api.post(f"/api/v1/clusters/{cluster_id}/name", {"name": "Guest"}, format="json")
    assert named.status_code == 201, named.content
    identity_id = named.json()["id"]
    assert set(Face.objects.filter(identity_id=identity_id).values_list("id", flat=True)) == {f.pk for f in members}
    assert Template.objects.filter(identity_id=identity_id, masked=False).count() == 3
    assert not UnknownCluster.objects.filter(pk=cluster_id).exists()
    assert api.get("/api/v1/clusters").json()["count"] == 5

    # A later photo of that person is recognised; another cluster merges into an existing identity.
    # (re-encoded: the same bytes would be recognised as a duplicate and linked, not indexed)
    group = cv2.imread(str(sample_archive.archive_dir / "2019/group.jpg"))
    later = index(api, {"again.jpg": cv2.imencode(".jpg", group, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()})
    assert Face.objects.filter(image__job_id=later["id"], identity_id=identity_id).count() == 1
    other_cluster = api.get("/api/v1/clusters").json()["results"][0]["id"]
    into = api.post(f"/api/v1/clusters/{other_cluster}/name", {"identity_id": identity_id}, format="json")
    assert into.status_code == 201 and into.json()["id"] == identity_id
    assert api.post(f"/api/v1/clusters/{other_cluster}/name", {"name": "x", "identity_id": identity_id}, format="json").status_code == 404


def test_clustering_runs_in_the_background_as_images_arrive(api, sample_archive):
    """The jobs hook (or a re-match) clusters new unknown faces without anyone listing clusters."""
    from backend.gallery import services

    job = index(api, {name: (sample_archive.archive_dir / name).read_bytes() for name in GROUP_COPIES[:2]})
    face_ids = list(Face.objects.filter(image__job_id=job["id"]).values_list("id", flat=True))
    services.on_faces_indexed(api.user.pk, face_ids)
    wait_until(lambda: UnknownCluster.objects.filter(owner=api.user).count() == 6, what="six clusters")
    pairs = [list(Face.objects.filter(cluster=c)) for c in UnknownCluster.objects.filter(owner=api.user)]
    assert all(len(p) == 2 and p[0].image_id != p[1].image_id for p in pairs)
    assert not any(a.cluster_id == b.cluster_id for p, q in itertools.combinations(pairs, 2) for a in p for b in q)


def test_a_wrong_face_removed_from_a_cluster_stays_out_and_a_pair_dissolves(api, sample_archive, celery_worker_process):
    job = index(api, {name: (sample_archive.archive_dir / name).read_bytes() for name in GROUP_COPIES})
    assert api.get("/api/v1/clusters").json()["count"] == 6
    assert celery_worker_process.wait_idle()  # background clustering done: nothing pulls a removed face back
    cluster = UnknownCluster.objects.filter(owner=api.user).first()
    wrong, *rest = Face.objects.filter(cluster=cluster).order_by("id")
    removed = api.delete(f"/api/v1/clusters/{cluster.pk}/faces/{wrong.pk}")
    assert removed.status_code == 200 and removed.json()["identity"] is None
    wrong.refresh_from_db()
    assert wrong.cluster_id is None
    api.get("/api/v1/clusters")  # the catch-up pass does not put it back
    wrong.refresh_from_db()
    assert wrong.cluster_id is None and Face.objects.filter(cluster=cluster).count() == len(rest)
    assert api.delete(f"/api/v1/clusters/{cluster.pk}/faces/{wrong.pk}").status_code == 404  # no longer in it
    # A cluster left with one face is no group.
    pair = UnknownCluster.objects.filter(owner=api.user).exclude(pk=cluster.pk).first()
    first, *others = Face.objects.filter(cluster=pair).order_by("id")
    for face in others[:-1]:
        assert api.delete(f"/api/v1/clusters/{pair.pk}/faces/{face.pk}").status_code == 200
    assert api.delete(f"/api/v1/clusters/{pair.pk}/faces/{others[-1].pk}").status_code == 200
    assert not UnknownCluster.objects.filter(pk=pair.pk).exists()
    assert api.get(f"/api/v1/clusters/{pair.pk}").status_code == 404
    assert job["status"] == "completed"


@pytest.mark.django_db(transaction=True)
def test_clustering_a_batch_at_once_places_faces_as_one_at_a_time():
    """A call reads all its faces' neighbours up front and writes at the end: the
    result must be the rule applied face by face (module docstring), merges included."""
    import numpy as np
    from django.contrib.auth import get_user_model

    from backend.gallery import clustering
    from backend.gallery.models import Face, UnknownCluster
    from backend.jobs.models import Image, Job

    rng = np.random.default_rng(0)
    owner = get_user_model().objects.create_user(username="cluster-batches")
    job = Job.objects.create(owner=owner, request_fingerprint="synthetic", total_images=250)
    people = rng.standard_normal((25, 128))
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    faces = []
    for i in range(250):
        image = Image.objects.create(owner=owner, job=job, object_key=f"synthetic/{i}", original_name=f"{i}.jpg", size_bytes=1)
        for ordinal in range(int(rng.integers(1, 3))):
            # Noisy enough that people fragment and fragments merge, around the 0.45 threshold.
            vector = people[rng.integers(0, 25)] + rng.uniform(0.09, 0.16) * rng.standard_normal(128)
            faces.append(Face(owner=owner, image=image, ordinal=ordinal, box_x=0, box_y=0, box_w=1, box_h=1,
                              landmarks=[], det_score=1, quality=1, embedding=(vector / np.linalg.norm(vector)).astype(np.float32)))
    Face.objects.bulk_create(faces)
    ids = sorted(Face.objects.filter(owner=owner).values_list("id", flat=True))

    def clusters_after(step: int) -> list[list[int]]:
        Face.objects.filter(owner=owner).update(cluster=None, cluster_checked=False)
        UnknownCluster.objects.filter(owner=owner).delete()
        for start in range(0, len(ids), step):
            clustering.cluster_faces(owner.pk, ids[start:start + step])
        groups: dict[int, list[int]] = {}
        for face_id, cluster_id in Face.objects.filter(owner=owner, cluster__isnull=False).values_list("id", "cluster_id"):
            groups.setdefault(cluster_id, []).append(face_id)
        return sorted(sorted(g) for g in groups.values())

    one_by_one = clusters_after(1)
    assert 25 < len(one_by_one) < 60  # fragments exist: the merge rule had work to do
    assert clusters_after(20) == one_by_one
    assert clusters_after(len(ids)) == one_by_one
    assert clustering.cluster_faces(owner.pk, ids) == 0  # every face is clustered once

    # Round trips do not grow with the faces: reads, new clusters, writes (issue 14).
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    Face.objects.filter(owner=owner).update(cluster=None, cluster_checked=False)
    UnknownCluster.objects.filter(owner=owner).delete()
    with CaptureQueriesContext(connection) as run:
        placed = clustering.cluster_faces(owner.pk, ids[:60])
    assert placed > 20 and UnknownCluster.objects.filter(owner=owner).count() > 5
    sent = [q["sql"][:80] for q in run.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(sent) == 3, sent
