"""Finding dataset images and turning each into one embedding (cached per file)."""
from __future__ import annotations

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


@dataclass
class ImageEmbedding:
    path: str
    embedding: np.ndarray | None  # None only when the file is unreadable
    box: tuple[float, float, float, float] | None
    score: float
    faces_found: int
    error: str | None = None


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


def embed_images(pipeline, paths: list[Path], *, desc: str = "embedding") -> dict[str, ImageEmbedding]:
    """One embedding per distinct path: its largest detected face."""
    results: dict[str, ImageEmbedding] = {}
    for path in tqdm(sorted(set(map(str, paths))), desc=desc, file=sys.stderr, unit="img"):
        results[path] = embed_one(pipeline, Path(path))
    return results


def embed_one(pipeline, path: Path) -> ImageEmbedding:
    try:
        img = decode_image(path.read_bytes()).pixels
    except (OSError, ImageDecodeError) as exc:
        return ImageEmbedding(str(path), None, None, 0.0, 0, error=str(exc))
    faces = pipeline.process(img)
    if faces:
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        return ImageEmbedding(str(path), face.embedding, face.box, face.score, len(faces))
    height, width = img.shape[:2]
    box = (width * (1 - CENTRE_FRACTION) / 2, height * (1 - CENTRE_FRACTION) / 2,
           width * CENTRE_FRACTION, height * CENTRE_FRACTION)
    face = pipeline.embed_box(img, box)
    return ImageEmbedding(str(path), face.embedding, face.box, face.score, 0)
