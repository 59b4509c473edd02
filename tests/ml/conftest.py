"""Fixtures for the ml pipeline tests: real models, real faces shipped in installed wheels."""
from __future__ import annotations


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
