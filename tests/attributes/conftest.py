"""Fixtures for the attribute tests: real models on faces shipped in installed wheels."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `ml` and `weights` are top-level packages of the repository, not installed ones.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def pipeline():
    from ml.pipeline import FacePipeline

    return FacePipeline.from_manifest()


@pytest.fixture(scope="session")
def faces(pipeline):
    """{identity: aligned 112x112 BGR crop} for the eight package faces."""
    from ml.attributes.training_faces import package_faces

    return package_faces(pipeline)


# Apparent sex of the package faces (public identities), left to right in t1.jpg:
# Jennifer Aniston, Courteney Cox, David Schwimmer, Matthew Perry, Matt LeBlanc
# (in profile), Lisa Kudrow; Eileen Collins; Tom Hanks.
PACKAGE_FACE_SEX = {"t1_0": "F", "t1_1": "F", "t1_2": "M", "t1_3": "M", "t1_4": "M", "t1_5": "F",
                    "astronaut": "F", "tom_hanks": "M"}


@pytest.fixture(scope="session")
def labelled_photo_dir(faces, tmp_path_factory):
    """Photos of the package faces, three per person (as is, mirrored, darker), each
    aligned crop set in a 224x224 frame so the detector finds it again; ``labels.csv``
    beside them, labels made here from PACKAGE_FACE_SEX. Returns (root, csv path)."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("labelled")
    rows = ["path,sex"]
    for person, crop in faces.items():
        (root / person).mkdir()
        variants = [crop, np.ascontiguousarray(crop[:, ::-1]), (crop * 0.7).astype(np.uint8)]
        for i, variant in enumerate(variants, start=1):
            framed = cv2.copyMakeBorder(variant, 56, 56, 56, 56, cv2.BORDER_REFLECT)
            name = f"{person}/{person}_{i:04d}.png"
            cv2.imwrite(str(root / name), framed)
            rows.append(f"{name},{PACKAGE_FACE_SEX[person]}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels
