"""Labelled face photos for sex classification: one face per photo, cached.

A labels CSV has a header and rows ``path,sex`` (``M``/``F``, or
``male``/``female``), ``path`` relative to the image root; the identity is the
path's first folder (LFW layout ``<Name>/<Name>_0001.jpg``), or the file's stem
when the path has no folder. Each photo is run once through the face pipeline
(the largest face: landmarks, aligned 112x112 crop, recognizer embedding) and
cached as ``<sha256>-<detector>-<recognizer>.npz``, so training, evaluation
and plots on the same photos never detect or embed twice. A photo with no
detected face is embedded from its central 60% with template landmarks (as
``ml.eval`` does for pairs) and flagged, never dropped silently.
"""
from __future__ import annotations

import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.eval.images import CENTRE_FRACTION

SEX_CODES = {"f": 0, "female": 0, "m": 1, "male": 1}
LABEL_NAMES = ("female", "male")  # index = label


@dataclass
class LabelledFaces:
    paths: list[str]            # as written in the labels CSV
    identities: np.ndarray      # (n,) str: the person, for identity-disjoint splits
    labels: np.ndarray          # (n,) int64, index into LABEL_NAMES
    crops: np.ndarray           # (n, 112, 112, 3) uint8 BGR
    landmarks: np.ndarray       # (n, 5, 2) float32, in the photo's pixels
    embeddings: np.ndarray      # (n, dim) float32, L2-normalised, by ``recognizer``
    faces_found: np.ndarray     # (n,) int: 0 = no face detected (central crop used)
    root: Path
    recognizer: str

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray) -> "LabelledFaces":
        index = np.asarray(index)
        return LabelledFaces([self.paths[i] for i in index], self.identities[index], self.labels[index],
                             self.crops[index], self.landmarks[index], self.embeddings[index],
                             self.faces_found[index], self.root, self.recognizer)

    def image_path(self, i: int) -> Path:
        return self.root / self.paths[i]


def read_labels(labels_csv: str | Path) -> list[tuple[str, int]]:
    """(relative path, label) rows; a clear error for anything else."""
    rows = []
    with open(labels_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "sex"} <= set(reader.fieldnames):
            raise ValueError(f"{labels_csv}: expected a header with columns 'path' and 'sex'")
        for line, row in enumerate(reader, start=2):
            code = (row["sex"] or "").strip().lower()
            if code not in SEX_CODES:
                raise ValueError(f"{labels_csv}:{line}: sex must be M/F or male/female, not {row['sex']!r}")
            rows.append((row["path"].strip(), SEX_CODES[code]))
    if not rows:
        raise ValueError(f"{labels_csv}: no labelled rows")
    return rows


def identity_of(path: str) -> str:
    parts = Path(path).parts
    return parts[0] if len(parts) > 1 else Path(path).stem


def load_labelled_faces(root: str | Path, labels_csv: str | Path, *, pipeline=None,
                        cache_dir: str | Path | None = None, progress: bool = True) -> LabelledFaces:
    from tqdm import tqdm

    from ml.decode import decode_image
    from ml.training.data import DEFAULT_CACHE_DIR

    root = Path(root)
    rows = read_labels(labels_csv)
    missing = [p for p, _ in rows if not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled photos are not under {root}, e.g. {missing[0]}")
    if pipeline is None:
        from ml.pipeline import FacePipeline

        pipeline = FacePipeline.from_manifest()
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR.parent / "faces"
    cache.mkdir(parents=True, exist_ok=True)
    crops, landmarks, embeddings, found = [], [], [], []
    for rel, _ in tqdm(rows, desc="faces", disable=not progress, file=sys.stderr, leave=False):
        data = (root / rel).read_bytes()
        cached = cache / f"{hashlib.sha256(data).hexdigest()}-{pipeline.detector_id}-{pipeline.recognizer_id}.npz"
        if cached.exists():
            with np.load(cached) as npz:
                entry = {k: npz[k] for k in npz.files}
        else:
            entry = _face_entry(pipeline, decode_image(data).pixels)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **entry)
            tmp.replace(cached)  # atomic: a killed run leaves no half-written entry
        crops.append(entry["crop"])
        landmarks.append(entry["landmarks"])
        embeddings.append(entry["embedding"])
        found.append(int(entry["faces_found"]))
    return LabelledFaces(
        paths=[p for p, _ in rows], identities=np.array([identity_of(p) for p, _ in rows]),
        labels=np.array([label for _, label in rows], np.int64), crops=np.stack(crops),
        landmarks=np.stack(landmarks).astype(np.float32), embeddings=np.stack(embeddings).astype(np.float32),
        faces_found=np.array(found), root=root, recognizer=pipeline.recognizer_id)


def _face_entry(pipeline, pixels: np.ndarray) -> dict[str, np.ndarray]:
    faces = pipeline.process(pixels)
    if faces:
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
    else:
        height, width = pixels.shape[:2]
        box = (width * (1 - CENTRE_FRACTION) / 2, height * (1 - CENTRE_FRACTION) / 2,
               width * CENTRE_FRACTION, height * CENTRE_FRACTION)
        face = pipeline.embed_box(pixels, box)
    return {"crop": face.crop, "landmarks": np.asarray(face.landmarks, np.float32),
            "embedding": np.asarray(face.embedding, np.float32), "faces_found": np.array(len(faces))}


def identity_split(identities: np.ndarray, labels: np.ndarray, *, fractions=(0.6, 0.1, 0.3),
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) photo indices; no person in two parts.

    People are dealt out per sex (a person's label is their photos' majority),
    so every part has about the same share of women as the whole set.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError("fractions: three positive numbers summing to 1")
    people = np.unique(identities)
    person_label = {p: int(round(labels[identities == p].mean())) for p in people}
    rng = np.random.default_rng(seed)
    part_of: dict[str, int] = {}
    for label in (0, 1):
        group = rng.permutation([p for p in people if person_label[p] == label])
        cuts = np.round(np.cumsum(fractions)[:2] * len(group)).astype(int)
        if len(group) >= 3:  # every part gets at least one person of each sex
            cuts[0] = min(max(cuts[0], 1), len(group) - 2)
            cuts[1] = min(max(cuts[1], cuts[0] + 1), len(group) - 1)
        for k, members in enumerate(np.split(group, cuts)):
            part_of.update({p: k for p in members})
    part = np.array([part_of[p] for p in identities])
    return tuple(np.flatnonzero(part == k) for k in range(3))
