"""Malformed requests get a 4xx with a reason on every endpoint, never a 500.

Each endpoint receives wrong types, missing fields and odd query strings
while valid objects exist (an indexed image with faces, an identity, a
merge), so the requests reach the services rather than stopping at a 404.
"""
from __future__ import annotations

import pytest

from backend.gallery.models import Face

from helpers.api import enroll, index

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]

JUNK_BODIES = [
    {}, {"unexpected": 1}, [1, 2], "text", 17, None,
    {"source": 123}, {"source": ["s3://b/p"]}, {"source": {"a": 1}}, {"source": ""},
    {"name": 5}, {"name": None}, {"name": ["x"]}, {"name": "x" * 10_000},
    {"identity_id": "abc"}, {"identity_id": [1]}, {"identity_id": -1}, {"identity_id": 10**30},
    {"source_id": {"a": 1}}, {"source_id": "1; drop table"}, {"source_id": 1.5},
    {"face_ids": "1,2"}, {"face_ids": [None]}, {"face_ids": [[1]]}, {"face_ids": []}, {"face_ids": list(range(5000))},
    {"box": "x"}, {"box": [1, 2]}, {"box": [1, 2, "a", 4]}, {"box": [0, 0, 1e308, 1e308]}, {"box": None},
    {"options": "not json"}, {"options": [1]}, {"webhook_url": "ftp://x"}, {"webhook_url": 5},
    {"k": "abc", "threshold": "high"}, {"k": -5}, {"identity_id": 1, "all_faces": "maybe"},
]
JUNK_FORMS = [{"files": "not a file"}, {"image": "text", "image2": "text"}, {"options": "{bad json"},
              {"source": "s3://x", "files": "y"}, {"identity_id": "abc", "image": ""}]
JUNK_QUERIES = ["page=abc", "page=-1", "page_size=0", "page_size=huge", "job=abc", "identity=x", "mask=weird",
                "masked=perhaps", "since=yesterday", "until=2020-13-45", "format=exe", "k=abc", "limit=-3"]


def _urls(ids: dict) -> list[str]:
    return [
        "/api/v1/jobs", f"/api/v1/jobs/{ids['job']}", f"/api/v1/jobs/{ids['job']}/images",
        f"/api/v1/jobs/{ids['job']}/report", f"/api/v1/jobs/{ids['job']}/cancel", "/api/v1/webhook",
        "/api/v1/webhooks/deliveries", f"/api/v1/images/{ids['image']}", "/api/v1/faces", "/api/v1/identities",
        f"/api/v1/identities/{ids['identity']}", f"/api/v1/identities/{ids['identity']}/enroll",
        f"/api/v1/identities/{ids['identity']}/faces", f"/api/v1/identities/{ids['identity']}/report",
        f"/api/v1/identities/{ids['identity']}/enroll-faces", f"/api/v1/identities/{ids['identity']}/merge",
        "/api/v1/merges", f"/api/v1/merges/{ids['merge']}/undo", f"/api/v1/faces/{ids['face']}/assign",
        f"/api/v1/faces/{ids['face']}/reject", f"/api/v1/images/{ids['image']}/faces", "/api/v1/verify",
        "/api/v1/search", "/api/v1/clusters", "/api/v1/reports/identities",
        f"/api/v1/reports/identities/{ids['identity']}", f"/api/v1/reports/identities/{ids['identity']}/timeline.png",
        f"/api/v1/reports/jobs/{ids['job']}", "/api/v1/reports/appearances", "/api/v1/reports/appearances.csv",
    ]


def test_no_endpoint_answers_a_malformed_request_with_a_server_error(api, sample_archive):
    archive = sample_archive.archive_dir
    job = index(api, {"group.jpg": (archive / "2019/group.jpg").read_bytes(),
                      "hanks.jpg": (archive / "2021/hanks-large.jpg").read_bytes()})
    people = {p.name: p.read_bytes() for p in (sample_archive.enroll_dir / "Tom Hanks").iterdir()}
    identity = enroll(api, "Tom", people)
    other = enroll(api, "Tom again", people)
    merge = api.post(f"/api/v1/identities/{identity}/merge", {"source_id": other}, format="json").json()["id"]
    face = Face.objects.filter(image__job_id=job["id"]).first()
    ids = {"job": job["id"], "image": face.image_id, "face": face.pk, "identity": identity, "merge": merge}

    api.raise_request_exception = False  # collect every server error, not only the first
    server_errors = []
    for url in _urls(ids):
        for query in JUNK_QUERIES:
            response = api.get(f"{url}?{query}")
            if response.status_code >= 500:
                server_errors.append(("GET", url, query, response.status_code))
        for body in JUNK_BODIES:
            for method in (api.post, api.patch):
                response = method(url, body, format="json")
                if response.status_code >= 500:
                    server_errors.append((method.__name__.upper(), url, body, response.status_code))
                elif response.status_code >= 400 and response.get("Content-Type", "").startswith("application/json"):
                    error = response.json()
                    assert set(error) == {"error"} and error["error"]["message"], (url, body, error)
        for form in JUNK_FORMS:
            response = api.post(url, form, format="multipart")
            if response.status_code >= 500:
                server_errors.append(("POST multipart", url, form, response.status_code))
    assert not server_errors, server_errors[:20]
