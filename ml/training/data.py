"""Folder-per-identity face datasets: alignment cache and deterministic splits.

Layout: ``DIR/<identity>/<photo>`` (LFW style; other files in DIR are ignored).
Each photo is aligned once with ``ml``'s own detector and aligner (the largest
face, as a 112x112 BGR crop) and cached as ``<sha256>-<detector>.npz`` in a
cache folder, so re-runs, studies and resumed trainings skip detection.
Photos without a detectable face are cached as such and reported as skipped.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
DEFAULT_CACHE_DIR = Path(os.environ.get("FACEINDEX_CACHE", Path.home() / ".cache" / "faceindex")) / "aligned"


@dataclass
class AlignedFaces:
    crops: np.ndarray            # (n, 112, 112, 3) uint8 BGR
    labels: np.ndarray           # (n,) int64 index into identities
    identities: list[str]
    paths: list[str]
    skipped: list[str] = field(default_factory=list)  # photos with no detectable face

    def subset(self, index: np.ndarray) -> "AlignedFaces":
        return AlignedFaces(self.crops[index], self.labels[index], self.identities,
                            [self.paths[i] for i in index])


def scan_identity_folders(root: str | Path) -> list[tuple[Path, str]]:
    """(photo path, identity) for every image under ``root/<identity>/``, sorted."""
    root = Path(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for photo in sorted(folder.iterdir()):
            if photo.suffix.lower() in IMAGE_SUFFIXES and photo.is_file():
                found.append((photo, folder.name))
    if not found:
        raise ValueError(f"no identity folders with images under {root}")
    return found


def largest_face_crop(pipeline, pixels: np.ndarray) -> np.ndarray | None:
    """The aligned crop of the largest detected face, or None."""
    faces = pipeline.detect(pixels)
    if not faces:
        return None
    largest = max(faces, key=lambda f: f.box[2] * f.box[3])
    return pipeline.align(pixels, largest.landmarks)


def load_aligned_faces(root: str | Path, *, cache_dir: str | Path | None = None,
                       pipeline=None, progress: bool = True) -> AlignedFaces:
    """Align every photo under ``root`` (cached); identities without a face are dropped."""
    from tqdm import tqdm

    from ml.decode import decode_image
    from ml.errors import ImageDecodeError

    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    crops, names, paths, skipped = [], [], [], []
    for path, identity in tqdm(scan_identity_folders(root), desc="align", disable=not progress, leave=False):
        data = path.read_bytes()
        if pipeline is None:
            from ml.pipeline import FacePipeline
            pipeline = FacePipeline.from_manifest()
        cached = cache_dir / f"{hashlib.sha256(data).hexdigest()}-{pipeline.detector_id}.npz"
        if cached.exists():
            crop = np.load(cached)["crop"]
        else:
            try:
                found = largest_face_crop(pipeline, decode_image(data).pixels)
            except ImageDecodeError:
                found = None
            crop = found if found is not None else np.zeros((0, 112, 112, 3), np.uint8)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, crop=crop)
            tmp.replace(cached)  # atomic: a killed run never leaves a half-written cache entry
        if crop.size == 0:
            skipped.append(str(path))
            continue
        crops.append(crop)
        names.append(identity)
        paths.append(str(path))
    if not crops:
        raise ValueError(f"no faces found under {root}")
    identities = sorted(set(names))
    labels = np.array([identities.index(n) for n in names], dtype=np.int64)
    return AlignedFaces(np.stack(crops), labels, identities, paths, skipped)


def select_identities(faces: AlignedFaces, *, min_photos: int = 1, max_photos: int = 0,
                      max_identities: int = 0, seed: int = 0) -> AlignedFaces:
    """Only identities with at least ``min_photos`` aligned photos, each cut to its
    first ``max_photos`` (by file name; 0 keeps all); of those, ``max_identities``
    drawn at random with ``seed`` (0 keeps all). Labels keep their meaning."""
    if min_photos <= 1 and max_photos <= 0 and max_identities <= 0:
        return faces
    eligible = [cls for cls in np.unique(faces.labels) if (faces.labels == cls).sum() >= min_photos]
    if max_identities > 0 and len(eligible) > max_identities:
        eligible = sorted(np.random.default_rng(seed).choice(eligible, size=max_identities, replace=False))
    keep = []
    for cls in eligible:
        members = np.flatnonzero(faces.labels == cls)
        keep.extend(members[:max_photos] if max_photos > 0 else members)
    if not keep:
        raise ValueError(f"no identity has {min_photos} or more photos")
    selected = faces.subset(np.array(sorted(keep)))
    selected.skipped = faces.skipped
    return selected


def split_indices(labels: np.ndarray, *, held_out: float, seed: int,
                  by: str = "photos") -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held-out) index arrays.

    ``by="photos"``: within every identity a fraction of its photos is held out
    (at least one when it has two or more; a single photo stays in training):
    the closed-set case of fine-tuning on the people you will search for.
    ``by="identities"``: whole identities are held out (open-set; at least two).
    """
    if not 0.0 < held_out < 1.0:
        raise ValueError("held_out must be in (0, 1)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    test: list[int] = []
    if by == "photos":
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            if len(members) >= 2:
                count = min(len(members) - 1, max(1, round(held_out * len(members))))
                test.extend(members[:count].tolist())
    elif by == "identities":
        count = min(len(classes) - 1, max(2, round(held_out * len(classes))))
        held = rng.permutation(classes)[:count]
        test = np.flatnonzero(np.isin(labels, held)).tolist()
    else:
        raise ValueError(f"split by 'photos' or 'identities', not {by!r}")
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
