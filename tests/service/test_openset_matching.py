"""The open-set rule through the stack: per-owner target FPIR, and re-match after enrollment follows it."""
from __future__ import annotations

import pytest

from backend.gallery import matching
from backend.gallery.models import Face, MatchingPolicy

from helpers.api import enroll, index
from helpers.gallery import faces_of, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_process")]


def enrollment(sample, person: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (sample.enroll_dir / person).iterdir()}


def rule_decision(face: Face):
    """What matching.decide says about a stored face now, for the owner's gallery as it stands."""
    scores = matching.identity_scores(face.owner_id, face.embedding)
    return matching.decide(scores, rule=matching.match_rule(face.owner_id))


def test_rematch_after_enrollment_applies_the_grown_gallery_threshold(api, sample_archive):
    job = index(api, {"hanks-large.jpg": (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    wait_until(lambda: faces_of(job["id"], "hanks-large.jpg").filter(identity_id=hanks).exists(), what="hanks matched")
    face = faces_of(job["id"], "hanks-large.jpg").get()
    assert rule_decision(face).identity_id == hanks

    # The owner now asks for a far stricter FPIR, written without re-matching
    # anything: the face keeps its name until the gallery changes.
    MatchingPolicy.objects.create(owner=api.user, target_fpir=1e-30)
    after = matching.match_rule(api.user.pk).threshold
    assert face.similarity < after
    face.refresh_from_db()
    assert face.identity_id == hanks

    # Enrolling someone else re-matches with the same rule as indexing: the
    # face is no longer above the threshold of the grown gallery.
    enroll(api, "Eileen", enrollment(sample_archive, "Eileen Collins"))
    wait_until(lambda: Face.objects.filter(pk=face.pk, identity__isnull=True).exists(), what="face re-decided")
    face.refresh_from_db()
    assert rule_decision(face).identity_id is None


def test_matching_policy_api_sets_the_owner_target_and_rematches(api, sample_archive):
    job = index(api, {"hanks-large.jpg": (sample_archive.archive_dir / "2021/hanks-large.jpg").read_bytes()})
    hanks = enroll(api, "Tom", enrollment(sample_archive, "Tom Hanks"))
    wait_until(lambda: faces_of(job["id"], "hanks-large.jpg").filter(identity_id=hanks).exists(), what="hanks matched")

    default = api.get("/api/v1/matching-policy").json()
    assert default["source"] == "deployment" and default["templates"] == 1
    strict = api.put("/api/v1/matching-policy", {"target_fpir": 1e-6}, format="json")
    assert strict.status_code == 200, strict.content
    body = strict.json()
    assert body["source"] == "owner" and body["target_fpir"] == 1e-6 and body["threshold"] >= default["threshold"]

    for bad in ({"target_fpir": 2}, {"target_fpir": "x"}, {}):
        response = api.put("/api/v1/matching-policy", bad, format="json")
        assert response.status_code == 400 and response.json()["error"]["field"] == "target_fpir"

    reset = api.put("/api/v1/matching-policy", {"target_fpir": None}, format="json")
    assert reset.status_code == 200 and reset.json() == default


def test_masked_probes_are_held_to_the_masked_impostor_tail():
    """Masked probes meet bare + masked-probe templates; their threshold comes from their own impostor tail."""
    from backend.core.pipeline import get_pipeline
    from ml.openset import openset_threshold

    pipeline = get_pipeline()
    assert pipeline.masked_impostor_tail is not None  # the manifest ships one (ml.eval calibrate --masked-probes)
    for templates in (600, 3000):
        bare = matching.threshold_for_gallery(templates, target_fpir=0.01)
        masked = matching.threshold_for_gallery(templates, target_fpir=0.01, masked=True)
        assert masked == pytest.approx(openset_threshold(pipeline.masked_impostor_tail, target_fpir=0.01,
                                                         comparisons=templates, floor=pipeline.threshold))
        # past ~1e-4 per pair the masked tail is the heavier one, so big galleries cut masked probes stricter
        assert masked > bare
