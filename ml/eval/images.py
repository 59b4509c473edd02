"""Finding dataset images and turning each into one embedding (cached per file)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.decode import decode_image
from ml.errors import ImageDecodeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# When no face is found the image still gets an embedding, of its central
# region with template landmarks, so a pair is never silently dropped.
NO_FACE_POLICY = "embedded the central 60% of the image with template landmarks"
CENTRE_FRACTION = 0.6
# Which detected face stands for an image: "largest", or "centre" (nearest the
# image centre: LFW-style photos are centred on the named person, and other
# people at the edges can be larger).
FACE_CHOICES = ("largest", "centre")
# Embeddings are cached per (pipeline setting, file list) so repeated runs on
# 2 shared cores do not re-embed thousands of photos; the folder is git-ignored.
CACHE_DIR = Path(os.environ.get("FACEINDEX_EVAL_CACHE", ".cache/ml-eval"))
CACHE_VERSION = 3  # bump when alignment or embedding code changes what a setting produces


@dataclass
class ImageEmbedding:
    path: str
    embedding: np.ndarray | None  # None only when the file is unreadable
    box: tuple[float, float, float, float] | None
    score: float
    faces_found: int
    error: str | None = None
    stamp: str = ""  # file size and mtime when embedded (cache check)

    def __post_init__(self):
        if not self.stamp:
            self.stamp = _stamp(self.path)


def _stamp(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}:{int(stat.st_mtime)}"


def _fresh(entry: "ImageEmbedding") -> bool:
    return entry.stamp == _stamp(entry.path)


def lfw_image_path(root: Path, name: str, index: int) -> Path:
    stem = root / name / f"{name}_{index:04d}"
    for ext in IMAGE_EXTENSIONS:
        candidate = stem.with_suffix(ext)
        if candidate.exists():
            return candidate
    for ext in IMAGE_EXTENSIONS:
        candidate = stem.with_suffix(ext.upper())
        if candidate.exists():
            return candidate
    return stem.with_suffix(".jpg")


def identity_folders(root: Path) -> list[tuple[str, Path]]:
    """(identity, image path) for every image in a folder-per-identity tree, sorted."""
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((folder.name, path))
    return items


def embed_images(pipeline, paths: list[Path], *, desc: str = "embedding", face: str = "largest",
                 cache: bool = True) -> dict[str, ImageEmbedding]:
    """One embedding per distinct path: its largest (or most central) detected face."""
    if face not in FACE_CHOICES:
        raise ValueError(f"face must be one of {FACE_CHOICES}, got {face!r}")
    ordered = sorted(set(map(str, paths)))
    cache_file = _cache_file(pipeline, face) if cache else None
    cached = _load_cache(cache_file) if cache_file is not None and cache_file.exists() else {}
    results: dict[str, ImageEmbedding] = {p: cached[p] for p in ordered if p in cached and _fresh(cached[p])}
    missing = [p for p in ordered if p not in results]
    if cache_file is not None:
        print(f"{desc}: {len(results)} cached in {cache_file}, {len(missing)} to embed", file=sys.stderr)
    for path in tqdm(missing, desc=desc, file=sys.stderr, unit="img", mininterval=10):
        results[path] = embed_one(pipeline, Path(path), face=face)
    if cache_file is not None and missing:
        _save_cache(cache_file, {**cached, **results})
    return results


def embed_one(pipeline, path: Path, *, face: str = "largest") -> ImageEmbedding:
    try:
        img = decode_image(path.read_bytes()).pixels
    except (OSError, ImageDecodeError) as exc:
        return ImageEmbedding(str(path), None, None, 0.0, 0, error=str(exc))
    faces = pipeline.process(img)
    if faces:
        chosen = pick_face(faces, img.shape[1], img.shape[0], face)
        return ImageEmbedding(str(path), chosen.embedding, chosen.box, chosen.score, len(faces))
    height, width = img.shape[:2]
    box = (width * (1 - CENTRE_FRACTION) / 2, height * (1 - CENTRE_FRACTION) / 2,
           width * CENTRE_FRACTION, height * CENTRE_FRACTION)
    face = pipeline.embed_box(img, box)
    return ImageEmbedding(str(path), face.embedding, face.box, face.score, 0)


def pick_face(faces, width: int, height: int, how: str):
    if how == "centre":
        return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - width / 2) ** 2 + (f.box[1] + f.box[3] / 2 - height / 2) ** 2)
    return max(faces, key=lambda f: f.box[2] * f.box[3])


def _cache_file(pipeline, face: str) -> Path:
    """One file per pipeline setting; entries are per image, checked against its size and mtime."""
    import weights

    key = json.dumps({
        "version": CACHE_VERSION, "face": face, "flip_tta": pipeline.flip_tta,
        # the landmarker's file and its options (refine_side, refine_margin, ...) change what it finds
        **({"landmarks": [pipeline.landmarker_id, weights.model_entry(pipeline.landmarker_id).sha256,
                          weights.model_entry(pipeline.landmarker_id).options]}
           if pipeline.landmarker is not None else {}),
        "detector": [pipeline.detector_id, weights.model_entry(pipeline.detector_id).sha256,
                     weights.model_entry(pipeline.detector_id).options],
        "recognizer": [pipeline.recognizer_id, weights.model_entry(pipeline.recognizer_id).sha256],
    }, sort_keys=True, default=str)
    return CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _save_cache(cache_file: Path, results: dict[str, ImageEmbedding]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    rows = list(results.values())
    dim = next((len(r.embedding) for r in rows if r.embedding is not None), 0)
    np.savez(
        cache_file,
        paths=np.array([r.path for r in rows]),
        embeddings=np.stack([r.embedding if r.embedding is not None else np.full(dim, np.nan, np.float32) for r in rows]),
        boxes=np.array([r.box if r.box else (np.nan,) * 4 for r in rows], dtype=np.float64),
        scores=np.array([r.score for r in rows]),
        faces_found=np.array([r.faces_found for r in rows]),
        errors=np.array([r.error or "" for r in rows]),
        stamps=np.array([r.stamp for r in rows]),
    )


def _load_cache(cache_file: Path) -> dict[str, ImageEmbedding]:
    data = np.load(cache_file)
    out = {}
    for path, emb, box, score, found, error, stamp in zip(data["paths"], data["embeddings"], data["boxes"], data["scores"],
                                                           data["faces_found"], data["errors"], data["stamps"]):
        unreadable = bool(np.isnan(emb).any())
        out[str(path)] = ImageEmbedding(
            str(path), None if unreadable else emb.astype(np.float32),
            None if np.isnan(box).any() else tuple(float(v) for v in box), float(score), int(found),
            error=str(error) or None, stamp=str(stamp))
    return out
