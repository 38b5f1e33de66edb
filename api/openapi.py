"""The OpenAPI document as users read it in ``/docs`` and ``/redoc`` (both served from the package, offline).

FastAPI builds the document from the routes; :func:`finish` then adds what it cannot see: the body of
``POST /v1/events`` (the route reads it itself) with examples, the scope each operation needs, the one error body
(:class:`api.models.ErrorBody`) under every 4xx/5xx answer, and the limits as configured (``n``). Idempotent.
"""

from __future__ import annotations

from typing import Any

from api.auth import document_scopes
from api.models import ErrorBody, Problem
from api.routes import events
from core.settings import Settings

ERROR_REF = "#/components/schemas/ErrorBody"
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def finish(openapi: dict[str, Any], settings: Settings, open_mode: bool) -> dict[str, Any]:
    """The whole document: request body, scopes, error bodies, configured limits."""
    events.document_body(openapi, settings.api_max_batch)
    document_scopes(openapi, open_mode=open_mode)
    if open_mode:
        document_open_mode(openapi)
    document_errors(openapi)
    document_limits(openapi, settings.recommendations_max_n)
    return openapi


def _operations(openapi: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, op) for path, ops in openapi.get("paths", {}).items() for op in ops.values()]


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx answer without a model of its own gets the one error body (the collector's refusals and the
    readiness probe's 503 keep theirs); an operation with a JSON body documents 400 for one that is not JSON."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    error_schema.pop("$defs", None)
    schemas["ErrorBody"] = error_schema
    for _, operation in _operations(openapi):
        responses = operation.setdefault("responses", {})
        if "requestBody" in operation:
            responses.setdefault("400", {"description": "The body is not valid JSON"})
        for status, response in responses.items():
            if status.isdigit() and int(status) >= 400 and not _has_own_model(response):
                response["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    return openapi


def document_open_mode(openapi: dict[str, Any]) -> dict[str, Any]:
    """In open mode (api/guard.py) every operation may answer 400 for a Host that is not a loopback name, and one
    with a body 415 for a body that is not ``application/json``."""
    for _, operation in _operations(openapi):
        responses = operation.setdefault("responses", {})
        host = "open mode: the Host header is not a loopback name"
        body = "The body is not valid JSON, or (" + host + ")"
        responses.setdefault("400", {"description": body if "requestBody" in operation else host.capitalize()})
        if "requestBody" in operation:
            responses.setdefault("415", {"description": "Open mode: the body is not sent as application/json"})
    return openapi


def _has_own_model(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema) and not any(name in str(schema) for name in _FASTAPI_VALIDATION)


def document_limits(openapi: dict[str, Any], max_n: int) -> dict[str, Any]:
    """``n`` (query parameter and cart body) documented with the configured maximum, the one the API enforces."""
    for _, operation in _operations(openapi):
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "n" and parameter.get("in") == "query":
                parameter.setdefault("schema", {})["maximum"] = max_n
    cart = openapi.get("components", {}).get("schemas", {}).get("CartRequest", {})
    if "n" in cart.get("properties", {}):
        cart["properties"]["n"]["maximum"] = max_n
    return openapi
