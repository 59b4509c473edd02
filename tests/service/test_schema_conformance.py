"""The OpenAPI schema describes the API: a bounded schemathesis run over every operation.

Requests that schemathesis generates from the schema (valid and invalid) go to
the real WSGI app with a real token, against the real database and storage.
Every answer must be documented (status code, content type, body schema) and
none may be a 5xx. Bounded: MAX_EXAMPLES per operation, no shrinking deadline.
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                status_code_conformance)

from .conftest import make_client

MAX_EXAMPLES = 6
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(transactional_db):
    from backend.config.wsgi import application

    raw = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = application
    return loaded


@pytest.fixture
def token(transactional_db) -> str:
    """The Authorization header of a fresh user (real token auth)."""
    return make_client()._credentials["HTTP_AUTHORIZATION"]


def test_every_answer_is_documented_and_none_is_a_server_error(api_schema, token):
    failures, operations = [], 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(headers={"Authorization": token}, checks=CHECKS)

        try:
            check()
        except BaseException as exc:  # noqa: B036 - hypothesis raises exception groups; collect them all: one run shows every undocumented answer
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
