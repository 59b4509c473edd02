"""Fixtures for the service tests (helpers: tests/helpers/api.py)."""
from __future__ import annotations

import pytest
from helpers.api import make_client


@pytest.fixture
def api(transactional_db):
    return make_client()
