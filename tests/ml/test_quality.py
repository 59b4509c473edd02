"""ml.quality: the face quality score that decides low_quality (never named, refused as a template)."""
from __future__ import annotations

import numpy as np

from ml.align import ARCFACE_TEMPLATE, align_face
from ml.quality import face_quality

MATCH_MIN_QUALITY = 0.30  # the shipped FACEINDEX_MATCH_MIN_QUALITY


def _face_photo(pipeline, img):
    face = max(pipeline.process(img), key=lambda f: f.box[2] * f.box[3])
    return face


def test_a_turned_face_keeps_a_matchable_quality(pipeline, astronaut):
    """Nose outside the eyes (a three-quarter view) halves the pose cue at most: not low_quality."""
    face = _face_photo(pipeline, astronaut)
    frontal = face_quality(face.box, face.landmarks, face.score, face.crop)
    turned = face.landmarks.copy()
    turned[2, 0] = turned[0, 0] - 0.2 * (turned[1, 0] - turned[0, 0])  # nose left of the left eye
    turned_quality = face_quality(face.box, turned, face.score, face.crop)
    assert turned_quality < frontal
    assert turned_quality >= frontal * 0.5 ** 0.25 - 1e-6
    assert turned_quality > MATCH_MIN_QUALITY


def test_a_tiny_blurred_face_is_below_the_match_cut(astronaut, pipeline):
    face = _face_photo(pipeline, astronaut)
    scale = 12.0 / face.box[2]
    box = (0.0, 0.0, face.box[2] * scale, face.box[3] * scale)
    blurred = np.full_like(face.crop, 128)
    landmarks = ARCFACE_TEMPLATE * (box[2] / 112.0)
    crop = align_face(blurred, landmarks)
    assert face_quality(box, landmarks, 0.6, crop) < MATCH_MIN_QUALITY
