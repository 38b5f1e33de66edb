"""The engine's errors (:mod:`core.errors`) mapped to HTTP, in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        count_dependency_error(exc)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unauthorized(_: Request, exc: Exception) -> JSONResponse:
        # RFC 6750: a missing key gets the bare challenge, a wrong one says invalid_token
        invalid = isinstance(exc, Unauthorized) and exc.invalid_token
        challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
        return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": challenge})

    async def forbidden(_: Request, exc: Exception) -> JSONResponse:
        scope = exc.scope if isinstance(exc, Forbidden) else ""
        challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
        return JSONResponse({"detail": str(exc)}, status_code=403, headers={"WWW-Authenticate": challenge})

    async def rate_limited(_: Request, exc: Exception) -> JSONResponse:
        wait = exc.retry_after_s if isinstance(exc, RateLimited) else 1
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(wait)})

    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(ServiceUnavailable, unavailable)
    app.add_exception_handler(PayloadTooLarge, too_large)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(NotFound, not_found)
