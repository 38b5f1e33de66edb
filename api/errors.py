"""The engine's errors (:mod:`core.errors`) mapped to HTTP, in one place, all with one body
(:class:`api.models.ErrorBody`): ``{"detail": "...", "errors": [{"field": ..., "reason": ...}]}``.

FastAPI's own refusals get that body too: a request that breaks the schema is 422 with one problem per field, a
body that is not JSON is 400 (as at the collector), an unknown path 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import metrics
from core.errors import (
    BadRequest,
    BrokerUnavailable,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
    Unauthorized,
)

__all__ = ["BadRequest", "NotFound", "PayloadTooLarge", "install_error_handlers"]


def count_dependency_error(exc: BaseException) -> None:
    """Count a request that met Redis (``redis``) or the broker (``kafka``) unavailable."""
    if isinstance(exc, StoreUnavailable):
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
    elif isinstance(exc, BrokerUnavailable):
        metrics.DEPENDENCY_ERRORS.labels("kafka").inc()


def error_body(detail: str, errors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The one error body (pure)."""
    return {"detail": detail, "errors": list(errors)}


def problems(errors: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI's validation errors as ``field``/``reason`` pairs (pure)."""
    return [
        {"field": ".".join(str(part) for part in e.get("loc", ())), "reason": str(e.get("msg", ""))} for e in errors
    ]


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON (as the collector answers), else 422 naming each field."""
    errors = list(exc.errors())
    broken = [e for e in errors if e.get("type") == "json_invalid"]
    if broken:
        reason = str(broken[0].get("ctx", {}).get("error") or broken[0].get("msg", ""))
        return JSONResponse(error_body(f"body is not valid JSON: {reason}"), status_code=400)
    found = problems(errors)
    summary = "; ".join(f"{p['field']}: {p['reason']}" for p in found[:3])
    return JSONResponse(error_body(f"invalid request: {summary}", found), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        count_dependency_error(exc)
        return JSONResponse(error_body(str(exc)), status_code=503, headers={"Retry-After": "1"})

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=413)

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=404)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    async def unauthorized(_: Request, exc: Exception) -> JSONResponse:
        # RFC 6750: a missing key gets the bare challenge, a wrong one says invalid_token
        invalid = isinstance(exc, Unauthorized) and exc.invalid_token
        challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
        return JSONResponse(error_body(str(exc)), status_code=401, headers={"WWW-Authenticate": challenge})

    async def forbidden(_: Request, exc: Exception) -> JSONResponse:
        scope = exc.scope if isinstance(exc, Forbidden) else ""
        challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
        return JSONResponse(error_body(str(exc)), status_code=403, headers={"WWW-Authenticate": challenge})

    async def rate_limited(_: Request, exc: Exception) -> JSONResponse:
        wait = exc.retry_after_s if isinstance(exc, RateLimited) else 1
        return JSONResponse(error_body(str(exc)), status_code=429, headers={"Retry-After": str(wait)})

    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(ServiceUnavailable, unavailable)
    app.add_exception_handler(PayloadTooLarge, too_large)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
