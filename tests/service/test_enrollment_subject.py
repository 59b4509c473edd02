"""Enrollment takes a photo's subject: the clearly largest face; otherwise the user picks a box."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from backend.core.pipeline import get_pipeline
from backend.gallery.models import Template
from ml.package_images import astronaut_bgr, read_package_image
from ml.subject import DOMINANCE_AREA_RATIO

from helpers.api import files_payload
from helpers.gallery import jpeg

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def face_patch(img: np.ndarray, face_width: int) -> np.ndarray:
    """The region around the image's largest face, scaled so the face box is ``face_width`` px wide."""
    face = max(get_pipeline().process(img), key=lambda f: f.box[2] * f.box[3])
    x, y, w, h = face.box
    cx, cy, half = x + w / 2, y + h / 2, max(w, h)
    padded = cv2.copyMakeBorder(img, int(half), int(half), int(half), int(half), cv2.BORDER_CONSTANT, value=(160, 160, 160))
    x0, y0 = int(cx - half + half), int(cy - half + half)
    patch = padded[y0:y0 + int(2 * half), x0:x0 + int(2 * half)]
    size = int(round(2 * half * face_width / w))
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if size < patch.shape[0] else cv2.INTER_CUBIC)


def group_photo(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, int]:
    """Both patches on one grey canvas; returns it and the x where the right one starts."""
    height = max(left.shape[0], right.shape[0]) + 40
    split = left.shape[1] + 60
    canvas = np.full((height, split + right.shape[1] + 20, 3), 160, np.uint8)
    canvas[20:20 + left.shape[0], 20:20 + left.shape[1]] = left
    canvas[20:20 + right.shape[0], split:split + right.shape[1]] = right
    return canvas, split


def own_embedding(img: np.ndarray) -> np.ndarray:
    return max(get_pipeline().process(img), key=lambda f: f.box[2] * f.box[3]).embedding


def new_identity(api, name: str) -> int:
    created = api.post("/api/v1/identities", {"name": name}, format="json")
    assert created.status_code == 201, created.content
    return created.json()["id"]


def template_embedding(template_id: int) -> np.ndarray:
    return np.asarray(Template.objects.get(pk=template_id).embedding, dtype=np.float32)


def test_enrollment_takes_the_dominant_face_and_reports_the_bystander(api):
    hanks, astronaut = read_package_image("Tom_Hanks_54745.png"), astronaut_bgr()
    # The subject's face box 1.6x wider than the bystander's: 2.6x the area, well past the rule.
    photo, split = group_photo(face_patch(hanks, 150), face_patch(astronaut, 95))
    identity = new_identity(api, "Tom")
    response = api.post(f"/api/v1/identities/{identity}/enroll", files_payload({"with-bystander.jpg": jpeg(photo)}),
                        format="multipart")
    assert response.status_code == 201, response.content
    result = response.json()["results"][0]
    assert result["error"] is None and result["faces_found"] == 2
    assert result["box"][0] + result["box"][2] / 2 < split
    assert len(result["ignored_boxes"]) == 1 and result["ignored_boxes"][0][0] > split
    enrolled = template_embedding(result["template_id"])
    assert float(enrolled @ own_embedding(hanks)) > 0.7
    assert float(enrolled @ own_embedding(astronaut)) < 0.3


def test_no_dominant_face_is_refused_with_boxes_and_an_explicit_box_picks_one(api):
    hanks, astronaut = read_package_image("Tom_Hanks_54745.png"), astronaut_bgr()
    photo, split = group_photo(face_patch(hanks, 120), face_patch(astronaut, 120))
    identity = new_identity(api, "Eileen")
    files = {"couple.jpg": jpeg(photo)}
    refused = api.post(f"/api/v1/identities/{identity}/enroll", files_payload(files), format="multipart")
    assert refused.status_code == 422, refused.content
    error = refused.json()["results"][0]["error"]
    assert error["code"] == "no_dominant_face" and f"{DOMINANCE_AREA_RATIO:g}x" in error["message"]
    assert len(error["boxes"]) == 2
    assert refused.json()["error"]["code"] == "no_dominant_face"
    assert not Template.objects.filter(identity_id=identity).exists()

    right_box = max(error["boxes"], key=lambda b: b[0])
    assert right_box[0] > split
    picked = api.post(f"/api/v1/identities/{identity}/enroll",
                      {**files_payload(files), "box": ",".join(str(v) for v in right_box)}, format="multipart")
    assert picked.status_code == 201, picked.content
    result = picked.json()["results"][0]
    assert result["box"] == right_box and len(result["ignored_boxes"]) == 1
    enrolled = template_embedding(result["template_id"])
    assert float(enrolled @ own_embedding(astronaut)) > 0.7
    assert float(enrolled @ own_embedding(hanks)) < 0.3


def test_a_box_applies_to_one_photo_only_and_must_be_valid(api):
    astronaut = jpeg(astronaut_bgr())
    identity = new_identity(api, "Eileen")
    two = api.post(f"/api/v1/identities/{identity}/enroll",
                   {**files_payload({"a.jpg": astronaut, "b.jpg": astronaut}), "box": "10,10,100,100"}, format="multipart")
    assert two.status_code == 400 and two.json()["error"]["field"] == "box"
    bad = api.post(f"/api/v1/identities/{identity}/enroll",
                   {**files_payload({"a.jpg": astronaut}), "box": "ten,10,100,100"}, format="multipart")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "box"
    outside = api.post(f"/api/v1/identities/{identity}/enroll",
                       {**files_payload({"a.jpg": astronaut}), "box": "450,450,200,200"}, format="multipart")
    assert outside.status_code == 422 and outside.json()["error"]["field"] == "box"
    assert not Template.objects.filter(identity_id=identity).exists()


def test_index_command_reports_no_dominant_face_with_boxes_and_enrolls_the_box_given(api, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    hanks, astronaut = read_package_image("Tom_Hanks_54745.png"), astronaut_bgr()
    photo, split = group_photo(face_patch(hanks, 120), face_patch(astronaut, 120))
    people = tmp_path / "people"
    (people / "Eileen").mkdir(parents=True)
    (people / "Eileen" / "couple.jpg").write_bytes(jpeg(photo))
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "hanks.jpg").write_bytes(jpeg(hanks))

    call_command("index", str(archive), enroll=people, owner=api.user.username, stdout=io.StringIO())
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("enrolled Eileen"))
    assert "0/1 photos" in line and "no_dominant_face" in line and "--box Eileen/couple.jpg=" in line
    assert not Template.objects.filter(identity__name="Eileen", identity__owner=api.user).exists()

    right_box = max(json.loads(line[line.index("boxes found: ") + 13:line.index("] (pick") + 1]), key=lambda b: b[0])
    assert right_box[0] > split
    call_command("index", str(archive), enroll=people, owner=api.user.username, stdout=io.StringIO(),
                 box=["Eileen/couple.jpg=" + ",".join(str(v) for v in right_box)])
    assert "enrolled Eileen: 1/1 photos" in capsys.readouterr().err
    template = Template.objects.get(identity__name="Eileen", identity__owner=api.user, masked=False)
    assert float(np.asarray(template.embedding, np.float32) @ own_embedding(astronaut)) > 0.7

    with pytest.raises(CommandError, match="Nobody/x.jpg"):
        call_command("index", str(archive), enroll=people, owner=api.user.username, stdout=io.StringIO(),
                     box=["Nobody/x.jpg=1,2,30,30"])
