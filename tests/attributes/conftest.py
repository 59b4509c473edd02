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
