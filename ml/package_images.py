"""Files that ship inside installed wheels: the only images training and tests use."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MASK_NAMES = ("black", "blue", "green", "white")


def insightface_images_dir() -> Path:
    # insightface is installed without its dependencies: found, not imported.
    from weights import package_files

    return Path(str(package_files("insightface").joinpath("data", "images")))


def read_package_image(name: str) -> np.ndarray:
    """A BGR uint8 image from insightface's data/images (e.g. "t1.jpg")."""
    path = insightface_images_dir() / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read {path}")
    return img


def astronaut_bgr() -> np.ndarray:
    """skimage's astronaut photo (Eileen Collins), BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
