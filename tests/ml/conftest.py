"""Fixtures for the ml pipeline tests: real models, real faces shipped in installed wheels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers.images import package_image_bytes


@pytest.fixture(scope="session")
def group_photo() -> np.ndarray:
    """insightface's t1.jpg: six people, BGR."""
    from ml.decode import decode_image

    return decode_image(package_image_bytes("t1.jpg")).pixels


@pytest.fixture(scope="session")
def hanks() -> np.ndarray:
    """A 112x112 portrait of Tom Hanks, BGR."""
    from ml.decode import decode_image

    return decode_image(package_image_bytes("Tom_Hanks_54745.png")).pixels


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512, BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def lfw_tree(tmp_path_factory, pipeline, group_photo):
    """Six people from the group photo, two images each (the face and a resized mirrored copy), and an
    LFW-style pairs.txt (test_eval, test_fusion)."""
    root = tmp_path_factory.mktemp("lfw")
    people = []
    for n, face in enumerate(pipeline.detect(group_photo)):
        x, y, w, h = (int(v) for v in face.box)
        crop = group_photo[max(0, y - h // 2): y + 3 * h // 2, max(0, x - w // 2): x + 3 * w // 2]
        name = f"person_{n}"
        (root / name).mkdir()
        cv2.imwrite(str(root / name / f"{name}_0001.jpg"), crop)
        cv2.imwrite(str(root / name / f"{name}_0002.png"), cv2.resize(crop[:, ::-1], None, fx=1.3, fy=1.3))
        people.append(name)
    lines = ["1\t12"] + [f"{p}\t1\t2" for p in people]
    lines += [f"{a}\t1\t{b}\t2" for a, b in zip(people, people[1:] + people[:1])]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root
