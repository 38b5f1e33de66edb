"""Domain and adapter errors mapped to HTTP, in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ecrm.store import StoreUnavailable


class EventBusUnavailable(RuntimeError):
    """The Kafka producer could not deliver."""


class PayloadTooLarge(ValueError):
    """A request body or batch over the configured limit."""


class BadRequest(ValueError):
    """A request that cannot be read (not JSON, empty batch ...)."""


class NotFound(LookupError):
    """A named resource that does not exist."""


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(EventBusUnavailable, unavailable)
    app.add_exception_handler(PayloadTooLarge, too_large)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(NotFound, not_found)
