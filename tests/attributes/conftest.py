"""Fixtures for the attribute tests: real models on faces shipped in installed wheels."""
from __future__ import annotations


import pytest


@pytest.fixture(scope="session")
def faces(pipeline):
    """{identity: aligned 112x112 BGR crop} for the eight package faces."""
    from ml.attributes.training_faces import package_faces

    return package_faces(pipeline)
