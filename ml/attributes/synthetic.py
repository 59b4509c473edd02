"""Synthetic training samples for the mask classifier.

A sample is one package face, augmented (pose jitter, flip, colour), then
either left bare ("no_mask", sometimes with a non-mask occluder so "something
covers the face" is not enough), or given a mask worn properly ("mask") or
below the nose ("mask_incorrect"), then degraded like a real photo (blur,
low resolution, JPEG, noise). Fabrics are the named mask photos, recoloured,
plus made-up fabrics, so the classifier keys on shape and placement rather
than on four particular colours.
"""
from __future__ import annotations

import cv2
import numpy as np

from ml.attributes.mask_net import LABELS
from ml.attributes.overlay import CROP_SIZE, mask_texture, synthesize_masked


def recoloured(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(texture, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.3, 2.0) + rng.uniform(0, 60), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.5, 1.2), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def made_up_fabric(rng: np.random.Generator) -> np.ndarray:
    """A plain, pleated or patterned cloth of random colour (BGR uint8, 160x320)."""
    h, w = 160, 320
    base = rng.uniform(0, 255, 3)
    cloth = np.tile(base, (h, w, 1)).astype(np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(0.5, 2))
    cloth += grain[..., None] * rng.uniform(3, 15)
    kind = rng.integers(3)
    if kind == 1:  # pleats
        for y in np.sort(rng.uniform(0.25, 0.8, 3)) * h:
            cv2.line(cloth, (0, int(y)), (w, int(y)), tuple(float(v) for v in base * 0.7), 2)
    elif kind == 2:  # pattern in a second colour
        other = tuple(float(v) for v in rng.uniform(0, 255, 3))
        for _ in range(int(rng.integers(10, 60))):
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.circle(cloth, centre, int(rng.integers(3, 15)), other, -1)
    return np.clip(cloth, 0, 255).astype(np.uint8)


def augment_face(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pose jitter (as from imperfect landmarks), mirror and colour changes."""
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.9, 1.1)
    matrix = cv2.getRotationMatrix2D((CROP_SIZE / 2, CROP_SIZE / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-4, 4, 2)
    out = cv2.warpAffine(crop, matrix, (CROP_SIZE, CROP_SIZE), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32)
    out = (out - out.mean()) * rng.uniform(0.6, 1.4) + out.mean() + rng.uniform(-40, 40)
    out *= rng.uniform(0.85, 1.15, 3)  # white balance
    if rng.random() < 0.1:
        out[:] = out.mean(axis=2, keepdims=True)
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def occlude_not_mask(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sunglasses-like band over the eyes, or a patch off the nose-mouth area."""
    out = crop.copy()
    colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
    if rng.random() < 0.5:
        y = int(rng.uniform(44, 52))
        cv2.rectangle(out, (int(rng.uniform(18, 30)), y), (int(rng.uniform(82, 94)), y + int(rng.uniform(10, 16))), colour, -1)
    else:
        x = int(rng.choice([rng.uniform(0, 20), rng.uniform(80, 100)]))
        y = int(rng.uniform(0, 100))
        cv2.rectangle(out, (x, y), (x + int(rng.uniform(10, 25)), y + int(rng.uniform(10, 40))), colour, -1)
    return out


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.4:
        side = int(rng.uniform(20, 64))
        img = cv2.resize(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), (CROP_SIZE, CROP_SIZE))
    if rng.random() < 0.3:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(25, 95))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img)


def fabric_for(mask_names: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """A named mask (sometimes recoloured) or a made-up fabric."""
    if not mask_names or rng.random() < 0.35:
        return made_up_fabric(rng)
    texture = mask_texture(mask_names[int(rng.integers(len(mask_names)))])
    return recoloured(texture, rng) if rng.random() < 0.4 else texture


def new_face(crops: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A training face, often a morph of two people.

    Eight people are few: a classifier learns their faces and calls an unseen
    bare chin or smile "mask". Aligned crops share one geometry, so blending
    two of them is a plausible third face.
    """
    face = crops[int(rng.integers(len(crops)))]
    if len(crops) > 1 and rng.random() < 0.6:
        other = crops[int(rng.integers(len(crops)))]
        t = rng.uniform(0.2, 0.5)
        face = cv2.addWeighted(face, 1 - t, other, t, 0)
    return face


def make_sample(crop: np.ndarray, label: str, rng: np.random.Generator,
                mask_names: tuple[str, ...]) -> np.ndarray:
    face = augment_face(crop, rng)
    if label == "no_mask":
        if rng.random() < 0.15:
            face = occlude_not_mask(face, rng)
    else:
        face = synthesize_masked(face, rng=rng, wear=label, texture=fabric_for(mask_names, rng))
    return degrade(face, rng)


def make_batch(crops: list[np.ndarray], n: int, rng: np.random.Generator,
               mask_names: tuple[str, ...], labels: tuple[str, ...] = LABELS):
    """n samples with balanced labels: (list of 112x112 crops, int label indices into LABELS)."""
    images, targets = [], []
    for i in range(n):
        label = labels[i % len(labels)]
        images.append(make_sample(new_face(crops, rng), label, rng, mask_names))
        targets.append(LABELS.index(label))
    return images, np.array(targets, np.int64)
