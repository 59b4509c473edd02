"""Degraded probes for ``openset --degraded-probes``: is a face worth naming? (the quality cut)

Every probe photo is degraded one way, picked by a per-photo seed from
``VARIANTS`` (as they come in archives: untouched, shrunk so the face is tiny,
or out of focus), then detected, aligned, embedded and quality-scored from
scratch as indexing would (the face nearest the centre; no face: the centre
region, as for bare photos). ``quality_sweep`` then reports, for each quality
cut, what naming only faces at or above it keeps and loses. Cached beside the
bare embeddings.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ml.decode import decode_image
from ml.eval.images import _cache_file
from ml.eval.masked import _face

# (name, how): "down:f" shrinks the photo by f (LFW faces are ~100 px wide in 250 px photos),
# "blur:s" applies a Gaussian blur of sigma s px at full size.
VARIANTS = ("none", "down:0.4", "down:0.25", "down:0.15", "blur:2.5", "blur:5")
SEED = 11


@dataclass
class DegradedViews:
    probes: dict[str, np.ndarray]  # path -> embedding of the degraded photo's face
    quality: dict[str, float]
    variant: dict[str, str]
    face_found: dict[str, bool]


def variant_of(path: str) -> str:
    name = "/".join(Path(path).parts[-2:])
    digest = hashlib.sha256(f"{SEED}:{name}".encode()).digest()
    return VARIANTS[int.from_bytes(digest[:8], "little") % len(VARIANTS)]


def degrade(img: np.ndarray, variant: str) -> np.ndarray:
    kind, _, value = variant.partition(":")
    if kind == "down":
        f = float(value)
        h, w = img.shape[:2]
        return cv2.resize(img, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), float(value))
    return img


def degraded_views(pipeline, probe_paths, *, face: str = "centre", cache: bool = True) -> DegradedViews:
    cache_file = None
    if cache:
        bare = _cache_file(pipeline, face)
        cache_file = bare.with_name(f"{bare.stem}-degraded-{SEED}-{'-'.join(VARIANTS).replace(':', '')}.npz")
    stored = dict(np.load(cache_file)) if cache_file is not None and cache_file.exists() else {}
    views = DegradedViews({}, {}, {}, {})
    for i, p in enumerate(stored.get("paths", [])):
        p = str(p)
        views.probes[p], views.quality[p] = stored["embeddings"][i], float(stored["quality"][i])
        views.variant[p], views.face_found[p] = variant_of(p), bool(stored["found"][i])
    todo = sorted(set(map(str, probe_paths)) - set(views.probes))
    print(f"degraded probes: {len(todo)} to embed", file=sys.stderr)
    for path in tqdm(todo, desc="degraded probes", file=sys.stderr, unit="img", mininterval=10):
        img = degrade(decode_image(Path(path).read_bytes()).pixels, variant_of(path))
        chosen, found = _face(pipeline, img, face)
        views.probes[path], views.quality[path] = chosen.embedding, float(chosen.quality)
        views.variant[path], views.face_found[path] = variant_of(path), found
    if cache_file is not None and todo:
        paths = sorted(views.probes)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, paths=np.array(paths), embeddings=np.stack([views.probes[p] for p in paths]),
                 quality=np.array([views.quality[p] for p in paths]), found=np.array([views.face_found[p] for p in paths]))
    wanted = set(map(str, probe_paths))
    return DegradedViews(*({p: d[p] for p in wanted} for d in (views.probes, views.quality, views.variant, views.face_found)))
