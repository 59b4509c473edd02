"""Reports against the faces in the database: identity statistics, job summary, JSON/CSV exports, chart."""
from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime, timezone

import cv2
import pytest
from PIL import Image as PILImage

from backend.gallery.models import Face
from backend.jobs.models import Image

from helpers.api import enroll_people, files_payload, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def dated_jpeg(path, taken: str, quality: int = 90) -> bytes:
    """The photo re-encoded with EXIF DateTimeOriginal (quality varies the bytes)."""
    img = cv2.imread(str(path))
    pil = PILImage.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[36867] = taken
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture
def indexed(api, sample_archive):
    ids = enroll_people(api, sample_archive.enroll_dir)
    root = sample_archive.archive_dir
    files = {
        "hanks-2019-03.jpg": dated_jpeg(root / "2021/hanks-large.jpg", "2019:03:02 10:00:00"),
        "pair-2019-03.jpg": dated_jpeg(root / "2021/hanks-and-collins.jpg", "2019:03:20 18:30:00"),
        "pair-2020-07.jpg": dated_jpeg(root / "2021/hanks-and-collins.jpg", "2020:07:04 12:00:00", quality=85),
        "collins-2021-01.jpg": dated_jpeg(root / "2020/astronaut-crop.jpg", "2021:01:15 09:00:00"),
        "group-undated.jpg": (root / "2019/group.jpg").read_bytes(),
        "broken.jpg": b"\xff\xd8 not really",
    }
    job = wait_for_job(api, api.post("/api/v1/jobs", files_payload(files), format="multipart").json()["id"])
    return ids, job


def test_identity_statistics_match_the_faces_in_the_database(api, indexed):
    ids, job = indexed
    hanks = api.get(f"/api/v1/reports/identities/{ids['Tom Hanks']}").json()
    faces = Face.objects.filter(owner=api.user, identity_id=ids["Tom Hanks"]).select_related("image")
    assert hanks["appearances"] == faces.count() == 3
    assert hanks["images"] == len({f.image_id for f in faces})
    dates = sorted(f.image.taken_at for f in faces if f.image.taken_at)
    assert hanks["first_seen"] == dates[0].isoformat() == datetime(2019, 3, 2, 10, tzinfo=timezone.utc).isoformat()
    assert hanks["last_seen"] == dates[-1].isoformat()
    months = Counter(f.image.taken_at.strftime("%Y-%m") for f in faces if f.image.taken_at)
    assert {r["month"]: r["appearances"] for r in hanks["per_month"]} == months == {"2019-03": 2, "2020-07": 1}
    assert hanks["co_occurring"] == [{"identity_id": ids["Eileen Collins"], "name": "Eileen Collins", "images": 2}]

    guest = api.get(f"/api/v1/reports/identities/{ids['Guest Left']}").json()
    assert guest["appearances"] == 1 and guest["first_seen"] is None and guest["undated_appearances"] == 1
    assert guest["co_occurring"] == [{"identity_id": ids["Guest Centre"], "name": "Guest Centre", "images": 1}]

    summary = api.get(f"/api/v1/reports/jobs/{job['id']}").json()
    job_faces = Face.objects.filter(image__job_id=job["id"])
    assert summary["faces"] == job_faces.count() == job["faces_found"]
    assert summary["known_faces"] + summary["unknown_faces"] == summary["faces"]
    assert summary["unknown_faces"] == job_faces.filter(identity__isnull=True).count() == 4
    assert {r["name"]: r["faces"] for r in summary["identities"]} == dict(
        Counter(f.identity.name for f in job_faces.filter(identity__isnull=False).select_related("identity")))
    assert [(f["original_name"], f["error_code"]) for f in summary["failures"]] == [("broken.jpg", "unsupported_format")]

    # The terminal/demo report keeps its keys and agrees.
    legacy = api.get(f"/api/v1/jobs/{job['id']}/report").json()["report"]
    assert legacy["total_faces"] == summary["faces"]
    assert {r["name"]: r["appearances"] for r in legacy["identities"]} == {r["name"]: r["faces"] for r in summary["identities"]}


def test_appearance_exports_page_and_stream(api, indexed):
    ids, job = indexed
    faces = Face.objects.filter(image__job_id=job["id"])
    first = api.get("/api/v1/reports/appearances", {"job": job["id"], "page_size": 5}).json()
    assert first["count"] == faces.count() and len(first["results"]) == 5 and first["next"]
    rows, page = list(first["results"]), first
    while page["next"]:
        page = api.get(page["next"]).json()
        assert len(page["results"]) <= 5
        rows += page["results"]
    assert sorted(r["face_id"] for r in rows) == sorted(faces.values_list("id", flat=True))
    row = next(r for r in rows if r["identity"] == "Tom Hanks" and r["taken_at"])
    face = Face.objects.select_related("image").get(pk=row["face_id"])
    assert row["image"] == face.image.original_name and row["box_w"] == round(face.box_w, 1)
    assert row["similarity"] == round(face.similarity, 4) and row["crop_url"].startswith("http")

    response = api.get("/api/v1/reports/appearances.csv", {"identity": ids["Tom Hanks"]})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response.streaming
    parsed = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(parsed) == 3 and {r["identity"] for r in parsed} == {"Tom Hanks"}
    assert {r["image"] for r in parsed} == {"hanks-2019-03.jpg", "pair-2019-03.jpg", "pair-2020-07.jpg"}
    assert all(float(r["similarity"]) > 0 and r["crop_url"].startswith("http") for r in parsed)
    everything = api.get("/api/v1/reports/appearances.csv", {"job": job["id"], "urls": "false"})
    assert len(list(csv.DictReader(io.StringIO(b"".join(everything.streaming_content).decode())))) == faces.count()

    chart = api.get(f"/api/v1/reports/identities/{ids['Tom Hanks']}/timeline.png")
    assert chart.status_code == 200 and chart["Content-Type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG") and len(chart.content) > 2000
    decoded = cv2.imdecode(__import__("numpy").frombuffer(chart.content, "uint8"), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (320, 800)

    from helpers.api import make_client

    other = make_client()
    assert other.get(f"/api/v1/reports/identities/{ids['Tom Hanks']}").status_code == 404
    assert other.get("/api/v1/reports/appearances.csv", {"job": job["id"]}).status_code == 404
    assert Image.objects.filter(job_id=job["id"], taken_at__isnull=False).count() == 4
