"""Images that ship inside installed wheels: the only images training and tests use.

``insightface`` is installed without its dependencies, so it cannot be
imported; its data folder is found through the import system instead.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

MASK_NAMES = ("black", "blue", "green", "white")


def insightface_images_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the insightface wheel (for its data/images) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


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
