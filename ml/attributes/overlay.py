"""Synthetic face masks drawn onto aligned 112x112 ArcFace crops.

The mask pictures in the insightface wheel are flat photos of surgical-mask
fabric (a rectangle of cloth on a light background), not masks on faces. We cut
the fabric out of its background and texture-map it onto a mask outline fixed
in the ArcFace template's coordinates: every aligned crop puts the eyes, nose
tip and mouth corners at the same pixels, so one outline fits every face.

Two ways of wearing are drawn: ``"mask"`` covers the nose bridge down to the
chin; ``"mask_incorrect"`` sits below the nose (nose and nostrils visible).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from ml.package_images import MASK_NAMES, read_package_image

CROP_SIZE = 112
WEAR_STYLES = ("mask", "mask_incorrect")

# Mask outline in template pixels (eyes at y~51.6, nose tip y~71.7, mouth
# corners y~92.3, x 41.5/70.7). Top edge left to right, then the lower rim
# left to right; the chin point lies below the crop on purpose (masks reach
# under the chin).
_TOP_EDGE = {
    "mask": np.array([[15, 66], [30, 61], [44, 58], [56, 57], [68, 58], [82, 61], [97, 66]], np.float32),
    # Below the nostrils (nose tip y~72, nostril base ~78) but above the mouth.
    "mask_incorrect": np.array([[15, 82], [30, 80], [44, 79], [56, 78.5], [68, 79], [82, 80], [97, 82]], np.float32),
}
_BOTTOM_EDGE = np.array(
    [[15, 70], [17, 86], [23, 99], [33, 110], [45, 116], [56, 118], [67, 116], [79, 110], [89, 99], [95, 86], [97, 70]],
    np.float32,
)


@functools.lru_cache(maxsize=None)
def mask_texture(name: str) -> np.ndarray:
    """The fabric of ``mask_<name>.jpg`` (BGR uint8), cut out of its background."""
    if name not in MASK_NAMES:
        raise ValueError(f"unknown mask {name!r}; known: {', '.join(MASK_NAMES)}")
    img = read_package_image(f"mask_{name}.jpg")
    return _cut_out_fabric(img)


def _cut_out_fabric(img: np.ndarray) -> np.ndarray:
    """Crop to the rows/columns that are mostly fabric, not background.

    The background is the colour of the image corners; a row or column belongs
    to the fabric when most of its pixels differ from it. White fabric on a
    white sheet barely differs, so a small fixed inset is always applied too
    (the photos' outer few percent are seams and background).
    """
    h, w = img.shape[:2]
    corners = np.concatenate([img[:4, :4], img[:4, -4:], img[-4:, :4], img[-4:, -4:]]).reshape(-1, 3)
    background = np.median(corners, axis=0)
    differs = np.abs(img.astype(np.int16) - background).sum(axis=2) > 60
    rows = np.flatnonzero(differs.mean(axis=1) > 0.5)
    cols = np.flatnonzero(differs.mean(axis=0) > 0.5)
    top, bottom, left, right = 0, h, 0, w
    if len(rows) > h // 2 and len(cols) > w // 2:
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    inset_y, inset_x = int(0.04 * h), int(0.04 * w)
    return np.ascontiguousarray(img[top + inset_y : bottom - inset_y, left + inset_x : right - inset_x])


def mask_alpha_and_maps(wear: str, rng: np.random.Generator | None = None):
    """(alpha HxW float32 in [0,1], map_u, map_v) for a mask outline.

    ``map_u``/``map_v`` give each crop pixel's position on the fabric in [0, 1].
    With ``rng`` the outline is jittered (scale, shift, rotation, per-point
    noise) so a classifier does not learn one exact shape.
    """
    top = _TOP_EDGE[wear].copy()
    bottom = _BOTTOM_EDGE.copy()
    if rng is not None:
        top[:, 1] += rng.uniform(-3, 3)
        bottom[:, 1] += rng.uniform(-4, 4)
        top += rng.normal(0, 0.8, top.shape)
        bottom += rng.normal(0, 1.2, bottom.shape)
        centre = np.array([56, 80], np.float32)
        scale = rng.uniform(0.92, 1.08)
        angle = np.deg2rad(rng.uniform(-6, 6))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32) * scale
        shift = rng.uniform(-2.5, 2.5, 2)
        top = (top - centre) @ rot.T + centre + shift
        bottom = (bottom - centre) @ rot.T + centre + shift
        top, bottom = top.astype(np.float32), bottom.astype(np.float32)

    # The rim meets the top edge a little below its ends, whatever the wear.
    bottom[0, 1], bottom[-1, 1] = top[0, 1] + 4, top[-1, 1] + 4
    outline = np.concatenate([top, bottom[::-1]]).astype(np.float32)
    alpha = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    # Rasterise at 4x sub-pixel precision, then feather the rim a little.
    cv2.fillPoly(alpha, [np.round(outline * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6)

    xs = np.arange(CROP_SIZE, dtype=np.float32)
    x_left, x_right = min(top[0, 0], bottom[0, 0]), max(top[-1, 0], bottom[-1, 0])
    top_y = np.interp(xs, top[:, 0], top[:, 1])
    bottom_y = np.interp(xs, bottom[:, 0], bottom[:, 1])
    grid_x, grid_y = np.meshgrid(xs, np.arange(CROP_SIZE, dtype=np.float32))
    map_u = np.clip((grid_x - x_left) / max(x_right - x_left, 1.0), 0, 1)
    map_v = np.clip((grid_y - top_y[None, :]) / np.maximum(bottom_y - top_y, 1.0)[None, :], 0, 1)
    return alpha, map_u.astype(np.float32), map_v.astype(np.float32)


def render_fabric(texture: np.ndarray, map_u: np.ndarray, map_v: np.ndarray) -> np.ndarray:
    """The fabric warped onto the crop grid, shaded darker towards the cheeks (float32 BGR)."""
    th, tw = texture.shape[:2]
    fabric = cv2.remap(
        texture, map_u * (tw - 1), map_v * (th - 1), interpolation=cv2.INTER_AREA if tw > 400 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    ).astype(np.float32)
    # The mask wraps around the face: surfaces turning away from the camera
    # catch less light.
    shade = 1.0 - 0.35 * (2 * map_u - 1) ** 4
    return fabric * shade[..., None]


def synthesize_masked(
    crop: np.ndarray,
    mask_name: str | None = None,
    rng: np.random.Generator | None = None,
    *,
    wear: str = "mask",
    texture: np.ndarray | None = None,
) -> np.ndarray:
    """``crop`` (112x112x3 uint8, aligned) with a face mask drawn over nose, mouth and chin.

    ``mask_name``: one of ``MASK_NAMES`` ("black", "blue", "green", "white");
    None picks one with ``rng`` (or "blue" without). ``rng``: jitter the
    outline and lighting; None draws the canonical mask (deterministic).
    ``wear``: "mask" or "mask_incorrect" (below the nose). ``texture``: a BGR
    fabric image to use instead of a named mask (training uses made-up fabrics).
    Only pixels inside the outline change: everything above it is left as is.
    """
    if crop.shape != (CROP_SIZE, CROP_SIZE, 3) or crop.dtype != np.uint8:
        raise ValueError(f"expected a 112x112x3 uint8 aligned crop, got {crop.shape} {crop.dtype}")
    fabric, alpha = mask_layer(crop, mask_name, rng, wear=wear, texture=texture)
    out = crop.astype(np.float32) * (1 - alpha[..., None]) + fabric * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def synthesize_masked_image(
    img: np.ndarray,
    landmarks: np.ndarray,
    mask_name: str | None = None,
    rng: np.random.Generator | None = None,
    *,
    wear: str = "mask",
) -> np.ndarray:
    """A whole BGR photo with a mask drawn on the face at ``landmarks`` (ArcFace order).

    The mask is drawn in the aligned template and warped back into the photo,
    so detection and alignment can then run on a masked face end to end.
    """
    from ml.align import align_face, similarity_transform

    crop = align_face(img, landmarks)
    fabric, alpha = mask_layer(crop, mask_name, rng, wear=wear)
    matrix = similarity_transform(landmarks)
    size = (img.shape[1], img.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    fabric_img = cv2.warpAffine(fabric, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha_img = cv2.warpAffine(alpha, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = img.astype(np.float32) * (1 - alpha_img[..., None]) + fabric_img * alpha_img[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mask_layer(
    crop: np.ndarray,
    mask_name: str | None,
    rng: np.random.Generator | None,
    *,
    wear: str = "mask",
    texture: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(fabric 112x112x3 float32 BGR, alpha 112x112 float32) of a mask for ``crop``."""
    if wear not in WEAR_STYLES:
        raise ValueError(f"wear must be one of {WEAR_STYLES}, got {wear!r}")
    if texture is None:
        if mask_name is None:
            mask_name = "blue" if rng is None else MASK_NAMES[int(rng.integers(len(MASK_NAMES)))]
        texture = mask_texture(mask_name)
    alpha, map_u, map_v = mask_alpha_and_maps(wear, rng)
    fabric = render_fabric(texture, map_u, map_v)
    if rng is not None:
        # Photographed masks take on the scene's light: follow the face's
        # brightness loosely and tint slightly.
        face_level = float(crop[40:100, 25:87].mean()) / 128.0
        fabric *= rng.uniform(0.75, 1.1) * face_level ** rng.uniform(0.2, 0.7)
        fabric *= rng.uniform(0.92, 1.08, 3)
    if np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2]):
        # A greyscale photo gets a grey mask.
        fabric[:] = fabric.mean(axis=2, keepdims=True)
    return fabric, alpha
