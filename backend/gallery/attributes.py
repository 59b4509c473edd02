"""Per-face attributes: mask state for every face, age and sex only on request.

Age and sex are personal data: a job computes them only when its options say
`{"attributes": true}` (off by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.pipeline import get_age_sex_estimator, get_mask_classifier, get_pipeline

from .models import MaskState

MASKED_STATES = {MaskState.MASK, MaskState.MASK_INCORRECT}


@dataclass(frozen=True)
class FaceAttributes:
    mask_state: str
    mask_score: float
    age: float | None = None
    sex: str = ""
    sex_score: float | None = None

    @property
    def masked(self) -> bool:
        return self.mask_state in MASKED_STATES

    def as_fields(self) -> dict:
        return {"mask_state": self.mask_state, "mask_score": self.mask_score, "age": self.age,
                "sex": self.sex, "sex_score": self.sex_score}


def describe_faces(img: np.ndarray, faces: list, *, with_age_sex: bool) -> list[FaceAttributes]:
    """Attributes of embedded faces (ml EmbeddedFace: aligned crop + landmarks) of one image."""
    if not faces:
        return []
    masks = get_mask_classifier().predict([f.crop for f in faces])
    ages = get_age_sex_estimator().predict(img, faces) if with_age_sex else [None] * len(faces)
    out = []
    for mask, age_sex in zip(masks, ages):
        extra = {}
        if age_sex is not None:
            extra = {"age": round(float(age_sex.age), 1), "sex": age_sex.sex, "sex_score": round(float(age_sex.sex_score), 4)}
        out.append(FaceAttributes(mask.label, round(float(mask.score), 4), **extra))
    return out


def masked_template_embedding(crop: np.ndarray, bare_embedding: np.ndarray) -> np.ndarray:
    """The extra enrollment template that masked probes are matched against."""
    from ml.attributes.templates import enrollment_masked_template

    return enrollment_masked_template(get_pipeline(), crop, bare_embedding)


def is_masked(mask_state: str) -> bool:
    return mask_state in MASKED_STATES


def fill_missing_age_sex(image, load_pixels) -> int:
    """Estimate age/sex for an indexed image's faces that lack them (from their stored landmarks).

    ``load_pixels`` is called only when some face needs it. Returns how many faces were filled.
    """
    from ml.types import EmbeddedFace

    from .models import Face

    faces = list(Face.objects.filter(image=image, age__isnull=True).order_by("ordinal"))
    if not faces:
        return 0
    pixels = load_pixels()
    pipeline = get_pipeline()
    # The sex classifier may read the stored embedding or the aligned crop.
    detections = []
    for f in faces:
        landmarks = np.asarray(f.landmarks, np.float32)
        detections.append(EmbeddedFace(box=tuple(f.box), landmarks=landmarks, score=f.det_score,
                                       embedding=np.asarray(f.embedding, np.float32),
                                       crop=pipeline.align(pixels, landmarks), quality=f.quality))
    for face, estimate in zip(faces, get_age_sex_estimator().predict(pixels, detections)):
        Face.objects.filter(pk=face.pk).update(age=round(float(estimate.age), 1), sex=estimate.sex,
                                              sex_score=round(float(estimate.sex_score), 4))
    return len(faces)
