"""OpenAPI schema post-processing: the error answers every operation may give.

drf-spectacular documents each view's success answer; the errors come from one
place (backend/core/errors.py) for all of them, so they are added here once.
"""
from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "machine-readable reason, e.g. not_found, zip_corrupt"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True, "description": "the input at fault, if one"},
            },
            "required": ["code", "message", "field"],
        }
    },
    "required": ["error"],
}

DESCRIPTIONS = {
    "400": "invalid input",
    "401": "no or invalid credentials",
    "403": "not allowed",
    "404": "no such object for this owner",
    "409": "conflict with the current state (e.g. an Idempotency-Key reused with other content)",
    "413": "request or file too large",
    "422": "the input was understood but cannot be used (e.g. no face in the image)",
    "503": "a service this request needs is unavailable; retry later",
}


def _error_codes(path: str, method: str, operation: dict) -> list[str]:
    codes = ["401", "403", "503"]
    parameters = {parameter.get("name") for parameter in operation.get("parameters", [])}
    if "{" in path or "page" in parameters:  # no such object, or a page past the end
        codes.append("404")
    if method in ("post", "put", "patch") or operation.get("parameters"):
        codes.append("400")
    if method in ("post", "put", "patch"):
        codes += ["409", "413", "422"]
    return codes


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: an Error component and the error answers of every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in _error_codes(path, method, operation):
                operation["responses"].setdefault(code, {
                    "description": DESCRIPTIONS[code], "content": {"application/json": {"schema": reference}}})
    return result
