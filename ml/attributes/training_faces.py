"""Aligned faces from package images, labelled by identity, for training and tests.

Eight people: the six faces of insightface's ``t1.jpg``, Eileen Collins in
skimage's ``astronaut``, and insightface's already-aligned Tom Hanks crop.
"""
from __future__ import annotations

import numpy as np

from ml.package_images import astronaut_bgr, read_package_image


def package_faces(pipeline=None) -> dict[str, np.ndarray]:
    """{identity: 112x112x3 uint8 BGR aligned crop}, in a fixed order.

    ``pipeline``: a FacePipeline to detect and align with (built from the
    manifest when None). t1 faces are ordered left to right so ids are stable.
    """
    if pipeline is None:
        from ml.pipeline import FacePipeline

        pipeline = FacePipeline.from_manifest()
    faces: dict[str, np.ndarray] = {}
    group = read_package_image("t1.jpg")
    detected = sorted(pipeline.detect(group), key=lambda f: f.box[0])
    for i, face in enumerate(detected):
        faces[f"t1_{i}"] = pipeline.align(group, face.landmarks)
    astronaut = astronaut_bgr()
    best = max(pipeline.detect(astronaut), key=lambda f: f.score)
    faces["astronaut"] = pipeline.align(astronaut, best.landmarks)
    # Already aligned to the ArcFace template by insightface.
    faces["tom_hanks"] = read_package_image("Tom_Hanks_54745.png")
    return faces
